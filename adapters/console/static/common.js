// What the console's pages share: the console token, if the page was opened with one.
const token = new URLSearchParams(location.search).get("token");

export function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token) headers.set("Authorization", `Bearer ${token}`);
  return fetch(path, { ...options, headers });
}

export function feedUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

/** A console URL (relative to the page) with the token, for elements that cannot send headers. */
export function withToken(path) {
  if (!token) return path;
  const url = new URL(path, location.href);
  url.searchParams.set("token", token);
  return url.toString();
}

/** Links between the console's pages carry the token along. */
export function keepToken() {
  if (!token) return;
  for (const a of document.querySelectorAll("a[href]")) {
    const url = new URL(a.getAttribute("href"), location.href);
    if (url.origin === location.origin && !url.searchParams.has("token")) {
      url.searchParams.set("token", token);
      a.href = url.toString();
    }
  }
}

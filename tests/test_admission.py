"""The call book's rules, as a table: which answers mint tokens and which sockets join which calls."""

import attrs

from adapters.app.admission import ANSWER_WINDOW, Answered, CallBook, NewCall, Reconnect, Refused


@attrs.define
class Call:
    """A live call as the book sees it: it refuses a socket for ``refusal`` (None: may reconnect)."""

    refusal: str | None = "the call's media socket is open"

    def refuses_socket(self):
        return self.refusal


def test_answered_calls_count_against_the_limit_until_they_expire():
    book = CallBook(max_calls=2)
    assert isinstance(book.answer("a", "+1", "+2", 0.0), Answered)
    assert isinstance(book.answer("b", "+1", "+2", 1.0), Answered)
    assert book.answer("c", "+1", "+2", 2.0) == Refused("full")
    # "a" never connected: after the answer window it no longer holds a line.
    assert isinstance(book.answer("c", "+1", "+2", ANSWER_WINDOW + 0.1), Answered)
    assert book.claim("a", ANSWER_WINDOW + 0.2) == Refused(
        "call not answered here, or its socket came too late"
    )


def test_a_slow_answer_retried_by_vobiz_is_answered_again_without_taking_a_second_line():
    book = CallBook(max_calls=1)
    first = book.answer("a", "+1", "+2", 0.0)
    again = book.answer("a", "+1", "+2", 1.0)
    assert isinstance(first, Answered) and isinstance(again, Answered)
    assert book.held == 1


def test_the_first_socket_starts_the_call_and_a_second_cannot_join_while_it_is_open():
    book = CallBook(max_calls=5)
    book.answer("a", "+1", "+2", 0.0)
    claim = book.claim("a", 1.0)
    assert isinstance(claim, NewCall) and claim.answered.caller == "+1"
    assert book.claim("a", 1.1) == Refused("another socket is starting this call")
    book.started("a", Call())
    assert book.claim("a", 2.0) == Refused("the call's media socket is open")


def test_a_lost_socket_may_be_replaced_once_and_only_by_one_socket():
    book = CallBook(max_calls=5)
    book.answer("a", "", "", 0.0)
    book.claim("a", 0.5)
    call = Call(refusal=None)  # its socket dropped; Vobiz may reconnect
    book.started("a", call)
    assert book.claim("a", 100.0) == Reconnect()
    assert book.claim("a", 100.1) == Refused("another socket is reconnecting this call")


def test_ended_calls_get_no_new_token_and_their_sockets_open_nothing():
    book = CallBook(max_calls=5)
    book.answer("a", "", "", 0.0)
    book.claim("a", 0.5)
    book.started("a", Call())
    assert book.answer("a", "", "", 1.0) == Refused("call is live")
    book.finished("a")
    assert book.answer("a", "", "", 2.0) == Refused("call has ended")
    assert book.claim("a", 2.0) == Refused("call has ended")
    assert book.held == 0


def test_a_socket_that_never_sent_start_gives_the_answer_back_until_it_expires():
    book = CallBook(max_calls=5)
    book.answer("a", "", "", 0.0)
    book.claim("a", 1.0)
    book.release("a", 2.0)
    assert isinstance(book.claim("a", 3.0), NewCall)
    book.release("a", ANSWER_WINDOW + 1)
    assert book.held == 0


def test_draining_refuses_new_calls_only():
    book = CallBook(max_calls=5)
    book.answer("a", "", "", 0.0)
    book.draining = True
    assert book.answer("b", "", "", 0.0) == Refused("draining")
    assert isinstance(book.claim("a", 1.0), NewCall)

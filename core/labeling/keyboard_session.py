"""One labeler's pass through a dataset: the image shown, the class(es) picked for it, the way back
(history) and the keys that move it, applied in the order they were typed.

Kept free of Streamlit so it is tested without a browser; the page holds a LabelingState in its
session state and hands each batch of keys from the browser to `apply_keys`. Every action that
writes runs in its own transaction (`scope()`), so a failure loses only that action, and the rest
of a batch typed ahead is dropped with a message instead of landing on the wrong image.

The state carries the actor; every write goes through a declared core.labeling.queue service with it. Someone
who may not label (a viewer) browses the same queue read-only: nothing is reserved, and a save, skip or
clear is refused by core with the role named.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from core.datasets.label_space import ClassKey
from core.errors import UserError
from core.labeling import actions, reservations
from core.labeling import queue as labeling
from core.permissions import can_act
from core.users import User

Scope = Callable[[], AbstractContextManager]

DIGITS = "1234567890"
KEY_ACTIONS = ("enter", "left", "right", "s", "c", "r", "escape")


@dataclass
class LabelingState:
    dataset_id: uuid.UUID
    actor: User
    holder: uuid.UUID  # reservation owner: one per open page, so two tabs get different images
    multi: bool
    mode: str = "unlabeled"
    return_mode: str = "unlabeled"  # where R goes back to from review mode
    seed: int = 0
    card: labeling.ImageCard | None = None
    selection: list[uuid.UUID] = field(default_factory=list)
    history: list[uuid.UUID] = field(default_factory=list)
    history_pos: int = -1
    acks: dict[str, int] = field(default_factory=dict)  # page load → last batch seq; the browser
    # sends its next batch once its own seq is echoed back
    message: tuple[str, str] | None = None  # (kind: info/warning/error, text)
    leave: bool = False  # Esc: the page goes back to the dataset
    upcoming: list[uuid.UUID] = field(default_factory=list)  # the queue after this image (prefetch)
    held_at: float = 0.0  # time.monotonic() of the last claim of this page's window (shown + upcoming)
    exhausted: bool = False  # the queue had nothing more for this page at the last look
    beats: int = 0  # heartbeats received: the page reads the queue's counts again on each (others' moves)

    @property
    def image_id(self) -> uuid.UUID | None:
        return self.card.image_id if self.card else None


def ahead(state: LabelingState) -> list[uuid.UUID]:
    """The images that the next moves forward (Enter, S, →) will show, in order, as far as they can be
    known here: the history ahead of the shown image, or else the queue after it. A concurrent
    labeler may still take one first; the browser then shows what the server answers."""
    if state.card is None:
        return []
    if state.history_pos + 1 < len(state.history):
        return list(state.history[state.history_pos + 1:])
    return list(state.upcoming)


def start(scope: Scope, *, dataset_id: uuid.UUID, actor: User, mode: str = "unlabeled",
          image_id: uuid.UUID | None = None, seed: int = 0) -> LabelingState:
    """Open the page: the image asked for (URL) or the first of the queue, reserved for this page."""
    labeling.check_mode(mode)
    with scope() as session:
        dataset = labeling.labeling_dataset(session, dataset_id)
        state = LabelingState(dataset_id=dataset_id, actor=actor, holder=uuid.uuid4(),
                              multi=dataset.task_type == "multi_label", mode=mode,
                              return_mode=mode if mode != "review" else "unlabeled", seed=seed)
    if image_id is not None:
        _show(scope, state, image_id)
    else:
        _advance(scope, state)
    return state


def _reserves(state: LabelingState) -> bool:
    """Whether this page holds reservations (a labeler's); a viewer only looks (role read each time)."""
    return can_act(state.actor, "labeler")


def _open(session, state: LabelingState, image_id: uuid.UUID, *, reserved: bool = False) -> labeling.ImageCard:
    if not _reserves(state):
        return labeling.image_card(session=session, dataset_id=state.dataset_id, image_id=image_id)
    return actions.open_image(session=session, actor=state.actor, dataset_id=state.dataset_id, image_id=image_id,
                               holder=state.holder, reserved=reserved)


def _show(scope: Scope, state: LabelingState, image_id: uuid.UUID, *, record: bool = True,
          session=None) -> None:
    if session is None:
        with scope() as session:
            state.card = _open(session, state, image_id)
    else:  # next_image reserved it in this transaction
        state.card = _open(session, state, image_id, reserved=True)
    state.selection = list(state.card.class_ids)
    state.held_at = time.monotonic()
    if record:
        del state.history[state.history_pos + 1:]
        state.history.append(image_id)
        state.history_pos = len(state.history) - 1


def _advance(scope: Scope, state: LabelingState) -> None:
    """→ / after a save: forward through history first, then the queue's next image."""
    if state.history_pos + 1 < len(state.history):
        state.history_pos += 1
        _show(scope, state, state.history[state.history_pos], record=False)
        return
    with scope() as session:
        common = {"session": session, "dataset_id": state.dataset_id, "mode": state.mode, "after": state.image_id,
                  "seed": state.seed, "exclude": tuple(state.history[-1:])}
        if _reserves(state):
            next_id, state.upcoming = actions.next_image_and_upcoming(actor=state.actor, holder=state.holder,
                                                                       **common)
        else:
            found = labeling.queue_ids(limit=4, **common)
            next_id, state.upcoming = (found[0], found[1:]) if found else (None, [])
        if next_id is not None:
            if state.exhausted and state.message and state.message[0] == "info":
                state.message = None
            state.exhausted = False
            _show(scope, state, next_id, session=session)
            return
    state.exhausted = True
    state.message = ("info", f"No more images in the {state.mode.replace('_', ' ')} queue.")
    if state.card is not None:
        refresh(scope, state)


def _back(scope: Scope, state: LabelingState) -> None:
    if state.history_pos > 0:
        state.history_pos -= 1
        _show(scope, state, state.history[state.history_pos], record=False)
        return
    if state.card is None:
        return
    with scope() as session:
        previous = labeling.previous_id(session=session, dataset_id=state.dataset_id, before=state.image_id)
    if previous is None:
        state.message = ("info", "This is the first image.")
        return
    state.history.insert(0, previous)
    state.history_pos = 0
    _show(scope, state, previous, record=False)


def refresh(scope: Scope, state: LabelingState) -> None:
    with scope() as session:
        state.card = labeling.image_card(session=session, dataset_id=state.dataset_id, image_id=state.image_id)
    state.selection = list(state.card.class_ids)


def set_mode(scope: Scope, state: LabelingState, mode: str) -> None:
    labeling.check_mode(mode)
    if mode == state.mode:
        return
    if mode == "review":
        state.return_mode = state.mode
    state.mode = mode
    state.history, state.history_pos = [], -1
    state.card = None
    _advance(scope, state)


def end(scope: Scope, state: LabelingState) -> None:
    """The page is left (Esc, another page, the tab closing): its reservations end now."""
    if _reserves(state):
        with scope() as session:
            actions.release(session=session, actor=state.actor, dataset_id=state.dataset_id, holder=state.holder)
    state.held_at = 0.0


def hold(scope: Scope, state: LabelingState) -> bool:
    """Claim this page's window again (shown image + upcoming) after its lease may have run out (an
    idle tab, a return to the page). False when another labeler took the shown image meanwhile: the
    page then moves on to its next image, with a message."""
    if state.card is None or state.mode == "all" or not _reserves(state):
        return True
    window = [state.card.image_id, *[i for i in state.upcoming if i != state.card.image_id]]
    with scope() as session:
        held = actions.hold_window(session=session, actor=state.actor, dataset_id=state.dataset_id,
                                    image_ids=window, holder=state.holder)
    state.held_at = time.monotonic()
    state.upcoming = [i for i in state.upcoming if i in held]
    if state.card.image_id in held:
        return True
    state.message = ("warning", "Another labeler took this image while this page was idle; here is your next one.")
    _advance(scope, state)
    return False


def keep_alive(scope: Scope, state: LabelingState, *, idle_ms: float | None) -> None:
    """The page's heartbeat. While the labeler is active it keeps the window reserved; an idle page
    lets its leases run out (core.labeling.reservations). With nothing shown it looks again: images other
    labelers held come back when their pages move on, close or go idle."""
    state.beats += 1
    if idle_ms is not None and idle_ms > reservations.IDLE_S * 1000:
        return
    if state.card is None or state.exhausted:
        if state.mode != "all":
            _advance(scope, state)
        return
    hold(scope, state)


def _lease_may_have_lapsed(state: LabelingState) -> bool:
    return time.monotonic() - state.held_at > reservations.LEASE_S * 0.5


def pick(state: LabelingState, class_id: uuid.UUID) -> None:
    """A number key or a click: single-label replaces the pick, multi-label toggles it."""
    if not state.multi:
        state.selection = [class_id]
    elif class_id in state.selection:
        state.selection = [c for c in state.selection if c != class_id]
    else:
        state.selection = [*state.selection, class_id]


def _write(scope: Scope, state: LabelingState, action: str) -> bool:
    """Save / skip / clear the shown image; True when the page should move on."""
    common = {"dataset_id": state.dataset_id, "image_id": state.image_id}
    with scope() as session:
        if action == "save":
            result = actions.save(session=session, actor=state.actor, class_ids=state.selection,
                                   shown_revision=state.card.label_revision, shown=state.card, **common)
        elif action == "skip":
            result = actions.skip(session=session, actor=state.actor, **common)
        else:
            result = actions.clear(session=session, actor=state.actor, shown_revision=state.card.label_revision,
                                    **common)
    state.card = result.card
    if result.outcome == "conflict":
        state.selection = list(result.card.class_ids)
        state.message = ("warning", result.message)
        return False
    if result.outcome == "cleared":
        state.selection = []
    return result.moves_on


def apply_key(scope: Scope, state: LabelingState, key: str, classes: list[ClassKey]) -> bool:
    """Apply one key; False stops the rest of the batch (an error or a conflict to look at)."""
    if key == "escape":
        state.leave = True
        end(scope, state)  # leaving: the images shown and prefetched go back to the queue for the others now
        return False
    if key == "r":
        set_mode(scope, state, state.return_mode if state.mode == "review" else "review")
        return True
    if state.card is None:
        return True
    by_key = {c.key: c.class_id for c in classes if c.key}
    if key in DIGITS:
        if key in by_key:
            pick(state, by_key[key])
        return True
    if key.startswith(("toggle:", "pick:")):
        action, _, raw = key.partition(":")
        class_id = uuid.UUID(raw)
        if action == "pick" and state.multi:
            state.selection = list(dict.fromkeys([*state.selection, class_id]))
        else:
            pick(state, class_id)
        if action == "toggle":
            return True
        key = "enter"
    if key == "left":
        _back(scope, state)
    elif key == "right":
        _advance(scope, state)
    elif key in ("enter", "s", "c"):
        if _write(scope, state, {"enter": "save", "s": "skip", "c": "clear"}[key]):
            _advance(scope, state)
        else:
            return state.message is None or state.message[0] == "info"
    return True


@contextmanager
def _transaction(session):
    """One transaction on a session the caller holds open (saves a connection check-out per action)."""
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


def apply_keys(scope: Scope, state: LabelingState, *, batch: dict, classes: list[ClassKey]) -> int:
    """Apply a batch {load, seq, image_id, keys, images} from the browser once, in order. A batch
    already applied (resent) is ignored; keys typed on another image than the one shown (image_id for
    the batch, images[i] for each key) are dropped with a warning. Returns keys applied."""
    load, seq = str(batch.get("load", "")), int(batch.get("seq", 0))
    if seq <= state.acks.get(load, 0):  # each page load numbers its batches 1, 2, …: a resend
        return 0
    state.acks[load] = seq
    keys = [str(k) for k in batch.get("keys", [])]
    if batch.get("leave"):  # the tab is closing or navigating away
        end(scope, state)
        return 0
    if not keys:  # a heartbeat
        keep_alive(scope, state, idle_ms=batch.get("idle_ms"))
        return 0
    state.message = None
    shown = batch.get("image_id")
    if shown and state.image_id and shown != str(state.image_id):
        state.message = ("warning", f"{len(keys)} key(s) ignored: they were typed for another image.")
        return 0
    if _lease_may_have_lapsed(state) and not hold(scope, state):
        state.message = (state.message[0], f"{state.message[1]} ({len(keys)} key(s) typed on it were not applied.)")
        return 0
    images = list(batch.get("images") or [])  # the image each key was typed on, where the browser knew it
    applied = 0
    for index, key in enumerate(keys):
        typed_on = images[index] if index < len(images) else None
        if typed_on and state.image_id and typed_on != str(state.image_id):
            # The browser guessed the next image wrong (another labeler took it, a conflict): these
            # keys were meant for another image than the one Python shows now.
            state.message = ("warning", f"{len(keys) - index} key(s) ignored: they were typed for another image.")
            break
        try:
            with scope() as session:  # one connection per key; each action still commits alone
                keep_going = apply_key(lambda: _transaction(session), state, key, classes)
        except UserError as exc:
            state.message = ("error", str(exc))
            keep_going = False
        applied += 1
        if not keep_going:
            if applied < len(keys) and state.message and state.message[0] != "info":
                state.message = (state.message[0], f"{state.message[1]} ({len(keys) - applied} key(s) typed "
                                                   "after it were not applied.)")
            break
    return applied

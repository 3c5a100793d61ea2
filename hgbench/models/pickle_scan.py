"""What a torch file's pickle would make the unpickler build, read before it runs: the globals it names and the memory.

torch's weights-only unpickler runs none of a file's code, but what it allows can still be made to allocate far more
than the file holds: ``builtins.bytearray(2**29)`` is 30 bytes of pickle and 512 MiB of zeros, a call such as
``_codecs.encode`` or ``OrderedDict`` applied again and again to one memoised object copies it each time, and plain
opcodes build objects a hundred times their size (an empty set and an append: two bytes, some 240 built). So every
pickle is walked first with `pickletools` (which parses, never builds), opcode by opcode as torch's unpickler would
run them:

- the globals it names must be among the few that weights and checkpoints hold (`allowed`: the tensor and parameter
  rebuilders, storage types and dtypes, ``OrderedDict``, ``Counter`` for a scheduler's milestones, ``torch.Size``,
  ``torch.device``); any other is named and the file refused, whether torch would refuse it or not;
- the bytes it would build are estimated from above on a stack of sizes (a reference weighs its whole object, and a
  call counts a copy of everything it is given), up to the first opcode torch's unpickler does not run (it stops
  there); past it the walk only collects the globals named, to name them.
"""

from __future__ import annotations

import io
import pickletools
import re
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from dataclasses import dataclass, field

_ALLOWED = frozenset(
    {
        "collections.OrderedDict",
        "collections.Counter",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch.Size",
        "torch.device",
    }
)
_ALLOWED_TYPES = re.compile(r"torch\.(\w*Storage|(u?int|float|bfloat|complex)\d*|float8_\w+|bool|half|double|long)")
_CAP = 1 << 50  # sizes saturate here (references can nest exponentially; every bound is far below)
_NEW = {"EMPTY_LIST": 56, "EMPTY_DICT": 64, "EMPTY_SET": 216, "EMPTY_TUPLE": 40, "BINFLOAT": 24}
_NEW |= {"NONE": 16, "NEWTRUE": 16, "NEWFALSE": 16, "BININT": 32, "BININT1": 32, "BININT2": 32}
_PER_ITEM = {"APPEND": 16, "APPENDS": 16, "SETITEM": 100, "SETITEMS": 100}  # a list's slot; a dict's entry and index
_CALL_RESULT = 512  # what a call builds besides copies of its arguments (a tensor's Python object and TensorImpl)
_MEMO_ENTRY = 100


def global_name(arg: str) -> str:
    """``module.name`` of a GLOBAL opcode's ``"module name"``, with Python 2's names mapped to Python 3's as torch's
    unpickler maps them (``__builtin__ exec`` is ``builtins.exec``)."""
    module, _, attr = arg.partition(" ")
    if (module, attr) in NAME_MAPPING:
        module, attr = NAME_MAPPING[(module, attr)]
    else:
        module = IMPORT_MAPPING.get(module, module)
    return f"{module}.{attr}"


def allowed(name: str) -> bool:
    """Whether a global is one that weights and checkpoints hold."""
    return name in _ALLOWED or _ALLOWED_TYPES.fullmatch(name) is not None


@dataclass
class PickleScan:
    """What the pickles at the start of a stream would build."""

    names: list[str] = field(default_factory=list)  # every global named, in order
    estimate: int = 0  # bytes torch's unpickler would allocate, from above
    stops_at: str | None = None  # the first opcode torch's unpickler does not run (it fails there), if any
    problem: str | None = None  # the walk could not finish: the pickle ends early or does not parse

    @property
    def refused(self) -> list[str]:
        """The globals named that weights and checkpoints never hold."""
        return [n for n in self.names if not allowed(n)]


class _OverLimit(Exception):
    """The estimate passed the caller's limit: the rest need not be walked."""


def scan(data: bytes, *, pickles: int = 1, limit: int | None = None) -> PickleScan:
    """Walk up to `pickles` consecutive pickles at the start of `data` (torch's legacy format writes five in a row);
    a walk that reaches the end of `data` between two pickles ends there, and one whose estimate passes `limit` stops
    at once (its `estimate` is then over `limit`)."""
    stream, result = io.BytesIO(data), PickleScan()
    for _ in range(pickles):
        if stream.tell() >= len(data) or result.stops_at is not None:
            break
        try:
            _Walk(result, limit).run(stream)
        except _OverLimit:
            break
        except (ValueError, IndexError, KeyError, TypeError) as exc:  # IndexError: an empty stack; KeyError: the memo
            ended = stream.tell() >= len(data)
            result.problem = "its pickle ends early" if ended else f"its pickle does not parse ({str(exc)[:80]})"
            break
    return result


class _Walk:
    """One pickle, run on sizes instead of objects: torch's unpickler's opcodes, then only the names."""

    def __init__(self, result: PickleScan, limit: int | None) -> None:
        self.result, self.limit = result, limit
        self.stack: list[int] = []
        self.marks: list[list[int]] = []
        self.memo: dict[int, int] = {}
        self.strings: list[str] = []  # for STACK_GLOBAL's names, past the opcodes torch runs
        self.string_memo: dict[int, str] = {}

    def build(self, size: int) -> None:
        self.result.estimate = min(self.result.estimate + size, _CAP)
        if self.limit is not None and self.result.estimate > self.limit:
            raise _OverLimit

    def push(self, size: int, *, built: int | None = None) -> None:
        """Push an object weighing `size` (its whole tree, references included); `built`: the bytes newly allocated
        for it (default all of it)."""
        self.stack.append(min(size, _CAP))
        self.build(size if built is None else built)

    def pop_mark(self) -> list[int]:
        items, self.stack = self.stack, self.marks.pop()
        return items

    def run(self, stream: io.BytesIO) -> None:
        for op, arg, _ in pickletools.genops(stream):
            if op.name == "STOP":
                return
            if self.result.stops_at is None and not self.torch_runs(op.name, arg):
                self.result.stops_at = op.name
            if self.result.stops_at is not None:
                self.names_only(op.name, arg)
        raise ValueError("no STOP")

    def torch_runs(self, name: str, arg: object) -> bool:  # noqa: PLR0911, PLR0912 (one branch per opcode)
        """Apply an opcode of torch's weights-only unpickler to the sizes; False for one it does not run."""
        if name in ("PROTO", "FRAME"):
            return name == "PROTO"
        if name in _NEW:
            self.push(_NEW[name])
        elif name in ("LONG1", "BINUNICODE", "SHORT_BINSTRING"):
            text = arg if isinstance(arg, (str, bytes)) else b""
            self.push(80 + 4 * len(text) if name != "LONG1" else 32 + abs(int(arg)).bit_length() // 8)  # UCS-4
        elif name == "MARK":
            self.marks.append(self.stack)
            self.stack = []
        elif name in ("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1]) if name != "TUPLE" else None
            items = self.pop_mark() if n is None else [self.stack.pop() for _ in range(n)]
            self.push(40 + sum(items) + 8 * len(items), built=40 + 8 * len(items))  # the items exist already
        elif name in ("APPEND", "SETITEM"):
            items = [self.stack.pop() for _ in range(1 if name == "APPEND" else 2)]
            self.grow(sum(items) + _PER_ITEM[name], built=_PER_ITEM[name])
        elif name in ("APPENDS", "SETITEMS"):
            items = self.pop_mark()
            self.grow(sum(items) + _PER_ITEM[name] * len(items), built=_PER_ITEM[name] * len(items))
        elif name == "GLOBAL":
            self.result.names.append(global_name(str(arg)))
            self.push(0, built=0)
        elif name in ("REDUCE", "NEWOBJ"):
            given = self.stack.pop()
            self.stack.pop()  # the callable or class
            self.push(given + _CALL_RESULT)  # it may copy all it is given
        elif name == "BUILD":
            state = self.stack.pop()
            self.grow(state, built=state)  # __setstate__ may copy the state
        elif name in ("BINPUT", "LONG_BINPUT"):
            self.memo[int(arg)] = self.stack[-1]
            self.build(_MEMO_ENTRY)
        elif name in ("BINGET", "LONG_BINGET"):
            self.push(self.memo[int(arg)], built=0)  # a reference: nothing built, but a call may copy all of it
        elif name == "BINPERSID":
            self.stack.pop()
            self.push(256)  # a storage: its bytes are a record of the file, bounded on their own
        else:
            return False
        return True

    def grow(self, by: int, *, built: int) -> None:
        """The container on top takes items weighing `by` in all, `built` of them newly allocated."""
        self.stack[-1] = min(self.stack[-1] + by, _CAP)
        self.build(built)

    def names_only(self, name: str, arg: object) -> None:
        """Past the opcodes torch runs: collect the globals a later protocol names (STACK_GLOBAL takes the two
        strings pushed, or fetched from the memo, last)."""
        if name == "GLOBAL":
            self.result.names.append(global_name(str(arg)))
        elif name == "STACK_GLOBAL" and len(self.strings) >= 2:
            self.result.names.append(f"{self.strings[-2]}.{self.strings[-1]}")
        elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT") and self.strings:
            self.string_memo[len(self.string_memo) if name == "MEMOIZE" else int(arg)] = self.strings[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET") and int(arg) in self.string_memo:
            self.strings.append(self.string_memo[int(arg)])
        elif isinstance(arg, str) and ("UNICODE" in name or "STRING" in name):
            self.strings.append(arg)

"""IPython extension of the cntk image: wurlitzer's capture of C-level output, minus CNTK's
own noise.

CNTK's C++ writes "Selected CPU as the process wide default device." to fd 2 the first time
a process uses its default device: on every session's first computation, true on this
CPU-only image, and not the user's output. This extension captures fd 1/2 for each cell as
wurlitzer's own extension does (pre_execute/post_execute) and forwards everything to the
kernel's streams except whole lines equal to one of `NOISE`.

It never hides what the user's code prints: `print` and `sys.stderr.write` go to the
kernel's streams directly, not through fd 1/2, so they are never filtered; only C-level
output passes this filter, and only a whole line that is exactly a NOISE line is dropped
(a partial line that could still become one is held back until it completes, and written
at the end of the cell if it never does). Python 2.7 and 3: no annotations, no f-strings.
"""

import sys

NOISE = (u"Selected CPU as the process wide default device.",)


class LineFilter(object):
    """A text stream wrapper that drops whole lines equal to one of `noise`."""

    def __init__(self, stream, noise=NOISE):
        self._stream = stream
        self._noise = tuple(noise)
        self._pending = u""  # the start of a line that may still become a noise line
        self._at_line_start = True

    def write(self, text):
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        out = []
        text = self._pending + text
        self._pending = u""
        start = 0
        while True:
            end = text.find(u"\n", start)
            if end < 0:
                break
            line = text[start:end]
            if not (self._at_line_start and line.rstrip(u"\r") in self._noise):
                out.append(text[start : end + 1])
            self._at_line_start = True
            start = end + 1
        rest = text[start:]
        if rest:
            if self._at_line_start and any(n.startswith(rest) for n in self._noise):
                self._pending = rest
            else:
                out.append(rest)
                self._at_line_start = False
        if out:
            self._stream.write(u"".join(out))

    def close(self):
        """The end of the cell: a held-back partial line was not noise after all."""
        if self._pending:
            self._stream.write(self._pending)
            self._at_line_start = False
            self._pending = u""

    def flush(self):
        self._stream.flush()


_capture = [None, ()]


def _start():
    import wurlitzer

    if _capture[0] is None:
        filters = (LineFilter(sys.stdout), LineFilter(sys.stderr))
        capture = wurlitzer.pipes(filters[0], filters[1])
        capture.__enter__()
        _capture[:] = [capture, filters]


def _stop():
    capture, filters = _capture
    if capture is not None:
        _capture[:] = [None, ()]
        capture.__exit__(None, None, None)
        for stream in filters:
            stream.close()


def load_ipython_extension(ip):
    if not getattr(ip, "kernel", None):
        return  # terminal IPython: C output already reaches the terminal
    ip.events.register("pre_execute", _start)
    ip.events.register("post_execute", _stop)


def unload_ipython_extension(ip):
    if not getattr(ip, "kernel", None):
        return
    ip.events.unregister("pre_execute", _start)
    ip.events.unregister("post_execute", _stop)
    _stop()

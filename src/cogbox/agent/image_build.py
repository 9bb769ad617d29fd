"""One image build a node runs, and the callers that wait on it (one build per image)."""

import asyncio
import logging

from cogbox.service.agent import BuildProgress


class ImageBuild:
    """One running image build and who listens to its steps."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.latest = ""
        self._listeners: list[BuildProgress] = []

    async def announce(self, step: str) -> None:
        self.latest = step
        for listener in list(self._listeners):
            try:
                await listener(step)
            except Exception:  # one listener failing must not fail the build or the others
                logging.getLogger(__name__).exception("a build progress listener failed")

    async def join(self, progress: BuildProgress) -> None:
        assert self.task is not None
        if self.latest:
            await progress(self.latest)
        self._listeners.append(progress)
        try:
            # Shielded: a caller that goes away (client disconnect) leaves the build running
            # for the others and for its next request.
            await asyncio.shield(self.task)
        finally:
            self._listeners.remove(progress)

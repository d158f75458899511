"""Where graders run: one :class:`Launcher` surface, one module per backend."""

from ._base import GradingJob, Launcher, LaunchHandle, RunOutput
from ._local import LocalLauncher

__all__ = ["GradingJob", "LaunchHandle", "Launcher", "LocalLauncher", "RunOutput"]

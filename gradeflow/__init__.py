"""gradeflow's core: models, storage, archives, the shim builder, launchers, results.

Nothing here imports Prefect; the Prefect layers (``tasks``, ``flows``) sit on top.
"""

from ._assignment import Assignment, GraderSpec, load_assignment
from ._errors import (
    ChecksumMismatch,
    ConfigurationError,
    GradeflowError,
    InfraError,
    InvalidSubmission,
    ObjectConflict,
    ObjectNotFound,
    ShimBuildError,
    StorageError,
)
from ._models import (
    GradeRequest,
    GradeResult,
    GraderIdentity,
    GradeStatus,
    Limits,
    ResourceUsage,
    ShimEnvelope,
    StageTimings,
    StudentFeedback,
    TestResult,
)
from ._settings import Settings
from ._shim_build import ShimArtifact, build_shim

__version__ = "0.1.0"

__all__ = [
    "Assignment",
    "ChecksumMismatch",
    "ConfigurationError",
    "GradeRequest",
    "GradeResult",
    "GradeStatus",
    "GradeflowError",
    "GraderIdentity",
    "GraderSpec",
    "InfraError",
    "InvalidSubmission",
    "Limits",
    "ObjectConflict",
    "ObjectNotFound",
    "ResourceUsage",
    "Settings",
    "ShimArtifact",
    "ShimBuildError",
    "ShimEnvelope",
    "StageTimings",
    "StorageError",
    "StudentFeedback",
    "TestResult",
    "__version__",
    "build_shim",
    "load_assignment",
]

"""Python client for the Raman identification service (`pip install ".[client]"`).

```python
from raman_client import RamanClient

with RamanClient("http://127.0.0.1:8000") as client:
    for result in client.identify_files(["quartz.txt"], top_k=3):
        print(result.id, result.top.label if result.top else result.error)
```
"""

from raman_client.client import DEFAULT_URL, RamanClient
from raman_client.errors import JobFailed, RamanAPIError, RamanConnectionError, RamanError
from raman_client.transport import RetryPolicy
from raman_client.types import (
    Grid,
    Job,
    JobLog,
    LogLine,
    ModelInfo,
    ModelRef,
    Prediction,
    Problem,
    Reference,
    Result,
    VersionInfo,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "Grid",
    "Job",
    "JobFailed",
    "JobLog",
    "LogLine",
    "ModelInfo",
    "ModelRef",
    "Prediction",
    "Problem",
    "RamanAPIError",
    "RamanClient",
    "RamanConnectionError",
    "RamanError",
    "Reference",
    "Result",
    "RetryPolicy",
    "VersionInfo",
    "__version__",
]

"""obs-workflow-restore: restore failed Huawei Cloud OBS workflow executions from failure events.

The package is deliberately import-light: importing ``handler`` pulls in nothing but the
standard library, so the FunctionGraph event path starts fast.
"""

__version__ = "0.1.0"

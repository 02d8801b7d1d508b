"""Role processes. Each runs as ``python -m runtime.roles <role> --run-dir DIR`` under the daemon."""

ROLE_MODULES = {
    "gateway": "runtime.roles.gateway:Gateway",
    "perception": "runtime.roles.perception:Perception",
    "decision": "runtime.roles.decision:Decision",
    "execution": "runtime.roles.execution:Execution",
    "teacher": "runtime.roles.teacher:TeacherRole",
    "distillation": "runtime.roles.distillation:Distillation",
}

#: Start order: consumers before producers, so early messages find their reader bound.
ROLES = ("teacher", "distillation", "execution", "decision", "perception", "gateway")

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
#: Without one of these no peer gets an action; without the teacher or the distiller the student
#: still serves (it stops learning), so a daemon whose teacher keeps failing keeps serving.
ESSENTIAL_ROLES = frozenset({"gateway", "perception", "decision", "execution"})

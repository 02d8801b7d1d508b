"""Learning, free of sockets: the student's networks and how it is built, the trainer and its replay
buffer, evaluation, checkpoints and the student registry, offline distillation, and the recipes
that trained the shipped teachers."""

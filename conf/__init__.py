"""rlrun's Hydra config tree, installed as the package ``rlrun.conf`` (pyproject maps ``conf/`` to
it) so that ``rlrun`` finds its configs from any directory, editable install or wheel. It holds
only yaml files: one directory per config group, one file per option (DESIGN.md section 2)."""

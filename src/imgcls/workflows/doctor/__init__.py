"""``imgcls doctor``, a room of its own: ``run`` (the recipe, ``doctor``), ``findings`` (what it
reports), ``copies`` (the copy thresholds and groups) and ``outputs`` (what it writes)."""

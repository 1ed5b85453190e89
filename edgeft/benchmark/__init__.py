"""``edgeft bench``: the run's engines and the peers a user would otherwise pick, side by side (engines.py),
measured by the device runtime's benchmark (``edgeft_runtime.bench``), so a number here and one from
``edgeft-runtime bench`` on the device come from the same code."""

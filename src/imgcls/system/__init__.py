"""What this machine can do and where the time went: CPU features, numeric precision of forward
passes, and the per-stage profile. Imports nothing above the top-level errors and config.
"""

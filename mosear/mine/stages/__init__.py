"""mosear's built-in mining stages (each also registered under the ``mosear.stages`` entry points)."""

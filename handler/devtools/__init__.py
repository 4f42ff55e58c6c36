"""Development tools: the local workflow API emulator and ``make demo``.

They let the function be run, tested and measured without a cloud account. Nothing here is
part of the function: the deploy packages leave ``handler/devtools/`` out
(scripts/build_package.py), and no production module imports it; only the operator's command
line (handler/cli/) reaches in. Modules here may import anything in ``handler``.
"""

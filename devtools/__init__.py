"""Development tooling: the dev PKI, the loopback cluster harness and the live demo.

Installed with Orchestra (``orchestra-pki`` is a console script) but kept out of the
``orchestra`` package, which holds only what the daemons and CLIs share at run time.
"""

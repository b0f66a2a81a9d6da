"""Persistent sessions (``nodeload push --persist DURATION``), OpenSSH's ControlPersist for pushes.

A push pays for a Python process, its imports and an SSH connection per node before it sends
a byte: on a warm push of a small change that is most of its time. With ``--persist``, the
first push starts a background process of the same user (:mod:`.server`) that stays for
DURATION after its last use, with nodeload loaded and the nodes' SSH connections open (a
:class:`nodeload.session.Session`); every push with ``--persist`` hands its command line to it
over a private unix socket (:mod:`nodeload.cli.handover`, the command line's side) and prints
what it answers. The session runs each push as the command line would, in its Session.
"""

"""Persistent sessions (``nodeload push --persist DURATION``), OpenSSH's ControlPersist for pushes.

A push pays for a Python process, its imports and an SSH connection per node before it sends
a byte: on a warm push of a small change that is most of its time. With ``--persist``, the
first push starts a background process of the same user (:mod:`.server`) that stays for
DURATION after its last use, with nodeload loaded and the nodes' SSH connections open
(:mod:`.pool`); every push with ``--persist`` hands its command line to it over a private unix
socket (:mod:`.client`) and prints what it answers.
"""

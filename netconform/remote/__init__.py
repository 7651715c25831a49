"""Remote mode: probes run in a debug pod on the target's node, driven from off the node.

=============  ====================================================  ===============
module         job                                                   runs on
=============  ====================================================  ===============
debugpod       create / wait for / delete the privileged debug pods  the controller
payload        the zip of pod-side code shipped over the exec stream the controller
boot           the bootstrap passed as `python3 -I -c BOOT`          both (a string)
hub            serves probes in the pod, one worker per namespace    the debug pod
transport      byte streams to the hub: a subprocess, or k8s exec    the controller
node           one session per debug pod: boot, calls, heartbeats    the controller
=============  ====================================================  ===============

This package imports nothing itself: the pod imports it as the parent of `hub`, and the
controller (which may be a laptop without Linux) imports only the modules it uses.
"""

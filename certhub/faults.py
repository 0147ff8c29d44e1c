"""Named points at which a test has this very process killed (SIGKILL), to prove recovery from a crash.

Off unless CERTHUB_FAULTS_DIR names a directory (the fault tests set it for the workers they
start). A point fires when a file of its name is in that directory; the file is removed first, so
each file a test writes kills exactly one process, once, whichever of many reaches the point first.
Before dying, the process appends "<unix time> <point> <detail>" to `fired.log` there.
"""

import os
import signal
import time

from django.conf import settings


def point(name: str, detail: str = "") -> None:
    directory = settings.CERTHUB_FAULTS_DIR
    if not directory:
        return
    try:
        os.remove(os.path.join(directory, name))
    except FileNotFoundError:
        return
    with open(os.path.join(directory, "fired.log"), "a") as log:
        log.write(f"{time.time():.3f} {name} {detail}\n")
    os.kill(os.getpid(), signal.SIGKILL)

"""One re-evaluation timer at a time in Snakemake's job scheduler (a CPU fix, not a feature).

Snakemake 9's job scheduler (``snakemake.scheduling.job_scheduler.JobScheduler``) ends every
scheduling pass that leaves ready jobs waiting with ``_schedule_reevalutation(timespan)``: a
new ``threading.Timer`` that releases the scheduler's semaphore, i.e. runs another pass, after
the rate limiter's timespan (1 s by default). The pass that timer triggers arms the next one, so
every event that wakes the scheduler (a job finishing, a job starting) starts one more timer
chain that lives as long as jobs wait for cores. After n job events there are n chains: n
passes per second, each checking every ready job's inputs. In the paper config (779 jobs, 2
cores) the snakemake process used 0.43 of a core this way (docs/results.md "Cost").

:func:`install` replaces that method with one that arms a timer only when none is pending: a
pass that wants a re-evaluation gets one within the same timespan (the pending timer's), so
the rate limiter's guarantee is unchanged, and the number of timer-driven passes is at most
one per timespan. The timer is a daemon thread: Snakemake does not wait for it at exit (a
non-daemon timer of a long timespan keeps the process alive that long after its last job).
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)
METHOD = "_schedule_reevalutation"  # sic: Snakemake's spelling


def coalesced_reevaluation(scheduler, delay: float) -> None:
    """Release ``scheduler._open_jobs`` after ``delay`` s unless a release is already pending."""
    pending = getattr(scheduler, "_persafl_timer", None)
    if pending is not None and pending.is_alive():
        return
    timer = threading.Timer(delay, scheduler._open_jobs.release)
    timer.daemon = True
    scheduler._persafl_timer = timer
    timer.start()


def install(scheduler_class=None) -> bool:
    """Patch ``JobScheduler`` (or ``scheduler_class``); False (and a log line) where the Snakemake
    version has no such method, so a newer Snakemake runs unpatched instead of failing."""
    if scheduler_class is None:
        try:
            from snakemake.scheduling.job_scheduler import JobScheduler as scheduler_class
        except ImportError:
            log.info("scheduler_timer: no snakemake.scheduling.job_scheduler; not patched")
            return False
    if not callable(getattr(scheduler_class, METHOD, None)):
        log.info("scheduler_timer: %s has no %s; not patched", scheduler_class.__name__, METHOD)
        return False
    setattr(scheduler_class, METHOD, coalesced_reevaluation)
    return True

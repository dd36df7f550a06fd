"""persafl.scheduler_timer: at most one pending re-evaluation timer, daemon, version-guarded."""

import threading
import time

from persafl import scheduler_timer


class FakeScheduler:
    def __init__(self):
        self._open_jobs = threading.Semaphore(0)


def releases(semaphore: threading.Semaphore) -> int:
    count = 0
    while semaphore.acquire(blocking=False):
        count += 1
    return count


def test_many_requests_arm_one_timer_that_fires_once():
    scheduler = FakeScheduler()
    for _ in range(50):
        scheduler_timer.coalesced_reevaluation(scheduler, 0.05)
    assert scheduler._persafl_timer.daemon
    time.sleep(0.3)
    assert releases(scheduler._open_jobs) == 1


def test_a_request_after_the_timer_fired_arms_a_new_one():
    scheduler = FakeScheduler()
    scheduler_timer.coalesced_reevaluation(scheduler, 0.02)
    time.sleep(0.2)
    scheduler_timer.coalesced_reevaluation(scheduler, 0.02)
    time.sleep(0.2)
    assert releases(scheduler._open_jobs) == 2


def test_install_replaces_the_method_and_skips_a_class_without_it():
    class WithMethod:
        def _schedule_reevalutation(self, delay):
            raise AssertionError("unpatched")

    class Without:
        pass

    assert scheduler_timer.install(WithMethod)
    assert WithMethod._schedule_reevalutation is scheduler_timer.coalesced_reevaluation
    assert not scheduler_timer.install(Without)


def test_the_pinned_snakemake_has_the_patched_method():
    # A Snakemake upgrade that renames it leaves the scheduler unpatched: this says so.
    from snakemake.scheduling.job_scheduler import JobScheduler

    assert callable(getattr(JobScheduler, scheduler_timer.METHOD, None))

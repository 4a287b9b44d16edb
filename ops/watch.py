"""Keep a cloud run alive through preemptions and stock-outs, declaratively: `make watch RUN=<name>`.

A VM that an apply made anew has a bare boot disk (no driver, no Docker): a first create, and every
replacement, which Terraform does for a change of an argument the google provider marks ForceNew (spot or
standard, the maximum run duration, the GPUs, the boot image, the zone). `hand_over` then rewrites the
inventory (the address is new too) and provisions it before it says done; `make infra-up` provisions the
VM it kept too.

`watch` loops at most WATCH_ATTEMPTS times: converge (through the offers: the quota preflight, then the next
offer or zone on a stock-out or a quota error; ops/terraform.py); done when gs://<bucket>/runs/<RUN>/manifest.json
exists (the trainer writes the manifest last); otherwise provision a VM that the apply made anew and
(re)start the run with the run verbs themselves (ops.runs.train: it resumes an unfinished run from its
checkpoints, or follows a running one, and returns when it ends); then sleep WATCH_SLEEP seconds. Each
step prints one `watch:` line; a failure ends in one `error:` line.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ops import bucket
from ops.terraform import Converged, Terraform, say
from trainer.errors import UserError

Step = Callable[[], None]


def hand_over(
    state: Converged, inventory: Step, provision: Step | None, always: bool = False, then: str = ""
) -> None:
    """After an apply: the inventory rewritten (the address may be new), then the playbook on a VM the apply
    made anew (or on any VM when `always`). A failure names the way on (`then`: what to run after `make
    provision`), since the next apply keeps this VM and does not provision it."""
    inventory()
    if provision is None:
        return
    if not (state.created or always):
        say("the VM was there before: not provisioned again (make provision re-runs the playbook)")
        return
    what = "provisioning the new VM" if state.created else "provisioning the VM"
    say(what)
    try:
        provision()
    except UserError as exc:
        raise UserError(f"{what} failed ({exc}): fix it, then make provision{then}") from None


def watch(
    tf: Terraform, run: str, start: Callable[[], object], inventory: Step, provision: Step | None,
    attempts: int = 10, sleep: float = 60.0, preflight=None, costs=None,
) -> int:  # fmt: skip
    """Converge (through the offers: `preflight` and `costs` as Terraform.converge takes them) and (re)start
    `run` until its manifest is in the bucket, at most `attempts` rounds."""
    if attempts < 1 or sleep < 0:
        raise UserError("WATCH_ATTEMPTS must be at least 1 and WATCH_SLEEP at least 0")
    url = ""
    for attempt in range(1, attempts + 1):
        say(f"attempt {attempt} of {attempts} for run {run}")
        state = tf.converge(preflight=preflight, costs=costs)
        say(state.where())
        url = str(state.outputs.get("bucket_url") or "")
        if not url:
            raise UserError(
                "the deployment has no bucket (bucket_url output): make watch needs one to see a run end"
            )
        if bucket.manifest_exists(url, run):
            say(f"run {run} is finished: {bucket.manifest_url(url, run)}")
            return 0
        hand_over(state, inventory, provision, then=f" and make watch RUN={run} again")
        say(f"run {run}: (re)starting it on the VM")
        try:
            start()
        except UserError as exc:
            say(f"the run ended here: {exc}")
        if bucket.manifest_exists(url, run):
            say(f"run {run} is finished: {bucket.manifest_url(url, run)}")
            return 0
        if attempt < attempts:
            say(f"run {run} is not finished; next check in {sleep:g} s")
            time.sleep(sleep)
    where = bucket.manifest_url(url, run) if url else "manifest"
    raise UserError(
        f"run {run} is not finished after {attempts} attempts (no {where}): see its log (make logs "
        f"RUN={run}), "
        f"then make watch RUN={run} again"
    )

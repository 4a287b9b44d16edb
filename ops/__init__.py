"""The laptop side of the cloud verbs, in one package: `python -m ops VERB` (see ops/__main__.py).

    ops.terraform   the one Terraform wrapper: init, plan, apply through the offers, infra-down
    ops.offers      the offers (GPU kind x count x spot x zones), what a failed apply means, the placement
    ops.quota       the GPU quota preflight (Compute Engine API)
    ops.catalog     prices from the Cloud Billing Catalog API
    ops.runcost     a run's training FLOPs, hours and cost on an offer
    ops.ranking     the offers table: quota, price, run cost
    ops.inventory   Terraform's outputs -> the Ansible inventory -> a typed Connection
    ops.vm          the SSH session: argument lists, copies as tar streams
    ops.ship        what goes to the VM (git's files, packed with tarfile), for the verbs and the playbook
    ops.runs        train, start, logs, state, stop, fetch
    ops.runs_table  make runs: every run compared by its manifest's figures, as a table or CSV
    ops.watch       converge and keep a run going through preemptions and stock-outs
    ops.bucket      the bucket from the laptop: credentials, checks, the runs listing, fetch
    ops.prices      the dated price table and the cost estimates made from it

It needs Python >= 3.10 (the venv `make setup` makes), OpenSSH, terraform and ansible-playbook, and nothing
else: no bash, no tar/sed/date/find/xargs, so every verb works on macOS as on Linux. It imports the
trainer's VM-side modules (trainer.gcs: the bucket layout; trainer.run_state: a run's state); the trainer
imports nothing from here, and the image does not ship it.
"""

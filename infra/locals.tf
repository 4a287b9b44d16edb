locals {
  # "us-central1-a" -> "us-central1" (try: a malformed zone is reported by its validation alone)
  region = try(regex("^(.+)-[a-z]$", var.zone)[0], var.zone)

  ssh_public_key_file = pathexpand(var.ssh_public_key_path)
  ssh_public_key      = fileexists(local.ssh_public_key_file) ? trimspace(file(local.ssh_public_key_file)) : ""

  bucket_name     = var.bucket_name != "" ? var.bucket_name : "${var.project_id}-${var.instance_name}"
  bucket_location = var.bucket_location != "" ? upper(var.bucket_location) : upper(local.region)

  labels = merge(var.labels, {
    app        = "tweet-trainer"
    managed-by = "terraform"
  })

  # Network tags the firewall rules select on.
  ssh_tag      = "${var.instance_name}-ssh"
  internal_tag = "${var.instance_name}-node"

  # Scheduling is derived here once. A VM with a GPU cannot live-migrate, so on_host_maintenance is
  # TERMINATE whatever the caller wants; spot VMs never restart on their own; a maximum run duration
  # (and a spot preemption) needs a termination action.
  provisioning_model          = var.spot ? "SPOT" : "STANDARD"
  automatic_restart           = !var.spot
  max_run_seconds             = floor(var.max_run_duration_hours * 3600)
  needs_termination_action    = var.spot || local.max_run_seconds > 0
  instance_termination_action = local.needs_termination_action ? var.termination_action : null

  # Zones that offer each GPU type, per region, from Google's "GPU regions and zones availability"
  # (https://cloud.google.com/compute/docs/gpus/gpu-regions-zones, read 2026-11). Only regions
  # listed here get a default fallback list; elsewhere set fallback_zones.
  gpu_zones = {
    us-central1 = {
      nvidia-tesla-t4   = ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"]
      nvidia-tesla-v100 = ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"]
      nvidia-tesla-p100 = ["us-central1-c", "us-central1-f"]
      nvidia-tesla-p4   = ["us-central1-a", "us-central1-c"]
    }
  }
  # The zones `make watch` tries, in order: zone first, then the fallbacks (zones are replaced whole:
  # the data disk is zonal and is made anew in the next zone; checkpoints live in the bucket).
  default_fallback_zones = lookup(lookup(local.gpu_zones, local.region, {}), var.gpu_type, [])
  zone_order             = distinct(concat([var.zone], var.fallback_zones != null ? var.fallback_zones : local.default_fallback_zones))

  apis = var.enable_apis ? toset([
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "storage.googleapis.com",
  ]) : toset([])
}

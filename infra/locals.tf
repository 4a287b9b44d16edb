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

  # The GPUs a VM has, derived here once. N1 machine types take attached GPUs (a guest_accelerator
  # block of gpu_count x gpu_type); the accelerator-optimized G2 and A2 machine types come with theirs,
  # so the module attaches none and gpu_type / gpu_count must say what the machine type has (the
  # preconditions in compute.tf refuse anything else, naming the fix). From Google's "GPU machine
  # types" (https://cloud.google.com/compute/docs/gpus; written down 2026-12): g2-standard-4, 8, 12, 16 and
  # 32 have 1 L4, g2-standard-24 2, g2-standard-48 4, g2-standard-96 8; a2-highgpu-Ng and
  # a2-megagpu-16g have N (16) A100 40GB; a2-ultragpu-Ng N A100 80GB.
  built_in_gpus = merge(
    { for n in [4, 8, 12, 16, 32] : "g2-standard-${n}" => { type = "nvidia-l4", count = 1 } },
    { for n, gpus in { 24 = 2, 48 = 4, 96 = 8 } : "g2-standard-${n}" => { type = "nvidia-l4", count = gpus } },
    { for n in [1, 2, 4, 8] : "a2-highgpu-${n}g" => { type = "nvidia-tesla-a100", count = n } },
    { "a2-megagpu-16g" = { type = "nvidia-tesla-a100", count = 16 } },
    { for n in [1, 2, 4, 8] : "a2-ultragpu-${n}g" => { type = "nvidia-a100-80gb", count = n } },
  )
  attachable_gpus   = ["nvidia-tesla-t4", "nvidia-tesla-p4", "nvidia-tesla-v100", "nvidia-tesla-p100"]
  attachable_counts = [1, 2, 4]
  attach_gpus       = !contains(keys(local.built_in_gpus), var.machine_type)
  built_in          = lookup(local.built_in_gpus, var.machine_type, { type = "", count = 0 })
  # The machine types that come with gpu_type, smallest first ("g2-standard-4 (1)", ...), and those
  # with exactly gpu_count of them: what the preconditions' messages suggest.
  machines_by_size = [
    for key in sort([for m, g in local.built_in_gpus : format("%06d %s", g.count * 1000 + tonumber(regex("-([0-9]+)g?$", m)[0]), m)]) :
    split(" ", key)[1]
  ]
  machines_with_gpu_type = [for m in local.machines_by_size : "${m} (${local.built_in_gpus[m].count})" if local.built_in_gpus[m].type == var.gpu_type]
  machines_with_gpus     = [for m in local.machines_by_size : m if local.built_in_gpus[m].type == var.gpu_type && local.built_in_gpus[m].count == var.gpu_count]
  gpu_fix = (
    contains(local.attachable_gpus, var.gpu_type) ? "an N1 machine_type such as \"n1-standard-4\" for ${var.gpu_type}" :
    length(local.machines_with_gpus) > 0 ? "machine_type = \"${local.machines_with_gpus[0]}\" for ${var.gpu_count} ${var.gpu_type}" :
    "a machine_type with ${var.gpu_type}: ${join(", ", local.machines_with_gpu_type)}"
  )

  # Zones that offer each GPU type, per region, from Google's "GPU regions and zones availability"
  # (https://cloud.google.com/compute/docs/gpus/gpu-regions-zones, read 2026-11). Only regions
  # listed here get a default fallback list; elsewhere set fallback_zones. nvidia-l4,
  # nvidia-tesla-a100 and nvidia-a100-80gb are not listed yet: their zones could not be re-read from
  # that page when G2 and A2 were added (2026-12), so those VMs get no default fallback zones (set
  # fallback_zones, e.g. from `gcloud compute accelerator-types list --filter=name=nvidia-l4`).
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

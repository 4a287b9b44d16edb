locals {
  # "us-central1-a" -> "us-central1" (try: a malformed zone is reported by its validation alone). The home
  # region (zone's) keeps the bucket whatever offer the VM runs on; the VM's region is its placement's.
  home_region = try(regex("^(.+)-[a-z]$", var.zone)[0], var.zone)
  region      = try(regex("^(.+)-[a-z]$", local.zone)[0], local.zone)

  ssh_public_key_file = pathexpand(var.ssh_public_key_path)
  ssh_public_key      = fileexists(local.ssh_public_key_file) ? trimspace(file(local.ssh_public_key_file)) : ""

  bucket_name     = var.bucket_name != "" ? var.bucket_name : "${var.project_id}-${var.instance_name}"
  bucket_location = var.bucket_location != "" ? upper(var.bucket_location) : upper(local.home_region)

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
  provisioning_model          = local.spot ? "SPOT" : "STANDARD"
  automatic_restart           = !local.spot
  max_run_seconds             = floor(var.max_run_duration_hours * 3600)
  needs_termination_action    = local.spot || local.max_run_seconds > 0
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
  attach_gpus       = !contains(keys(local.built_in_gpus), local.machine_type)
  built_in          = lookup(local.built_in_gpus, local.machine_type, { type = "", count = 0 })
  # The machine types that come with gpu_type, smallest first ("g2-standard-4 (1)", ...), and those
  # with exactly gpu_count of them: what the preconditions' messages suggest.
  machines_by_size = [
    for key in sort([for m, g in local.built_in_gpus : format("%06d %s", g.count * 1000 + tonumber(regex("-([0-9]+)g?$", m)[0]), m)]) :
    split(" ", key)[1]
  ]
  machines_with_gpu_type = [for m in local.machines_by_size : "${m} (${local.built_in_gpus[m].count})" if local.built_in_gpus[m].type == local.gpu_type]
  machines_with_gpus     = [for m in local.machines_by_size : m if local.built_in_gpus[m].type == local.gpu_type && local.built_in_gpus[m].count == local.gpu_count]
  gpu_fix = (
    contains(local.attachable_gpus, local.gpu_type) ? "an N1 machine_type such as \"n1-standard-4\" for ${local.gpu_type}" :
    length(local.machines_with_gpus) > 0 ? "machine_type = \"${local.machines_with_gpus[0]}\" for ${local.gpu_count} ${local.gpu_type}" :
    "a machine_type with ${local.gpu_type}: ${join(", ", local.machines_with_gpu_type)}"
  )

  # Zones that offer each GPU type, per region: the default zones of an offer that names regions (and
  # of zone's region for the single offer of zone / gpu_type / fallback_zones). T4, V100, P100 and P4 in
  # us-central1: Google's "GPU regions and zones availability"
  # (https://cloud.google.com/compute/docs/gpus/gpu-regions-zones), read 2026-11. L4 (G2), A100 40GB and
  # 80GB (A2), and the T4 outside us-central1: from the same page as last read before 2026-12, NOT
  # re-read on 2026-12-07 (it was out of reach here); availability changes, so an offer's `zones` wins
  # over this table, and a zone that turns out not to offer the GPU only moves make watch to the next
  # zone ("does not exist in zone" is one of the answers that move it). Check a region with
  # `gcloud compute accelerator-types list --filter=name=nvidia-l4`.
  gpu_zones = {
    us-central1 = {
      nvidia-tesla-t4   = ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"]
      nvidia-tesla-v100 = ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"]
      nvidia-tesla-p100 = ["us-central1-c", "us-central1-f"]
      nvidia-tesla-p4   = ["us-central1-a", "us-central1-c"]
      nvidia-l4         = ["us-central1-a", "us-central1-b", "us-central1-c"]
      nvidia-tesla-a100 = ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"]
      nvidia-a100-80gb  = ["us-central1-a", "us-central1-c"]
    }
    us-east1 = {
      nvidia-tesla-t4   = ["us-east1-c", "us-east1-d"]
      nvidia-l4         = ["us-east1-b", "us-east1-c", "us-east1-d"]
      nvidia-tesla-a100 = ["us-east1-b"]
    }
    us-east4 = {
      nvidia-tesla-t4  = ["us-east4-a", "us-east4-b", "us-east4-c"]
      nvidia-l4        = ["us-east4-a", "us-east4-c"]
      nvidia-a100-80gb = ["us-east4-c"]
    }
    us-west1 = {
      nvidia-tesla-t4   = ["us-west1-a", "us-west1-b"]
      nvidia-l4         = ["us-west1-a", "us-west1-b", "us-west1-c"]
      nvidia-tesla-a100 = ["us-west1-b"]
    }
    us-west4 = {
      nvidia-tesla-t4   = ["us-west4-a", "us-west4-b"]
      nvidia-l4         = ["us-west4-a", "us-west4-c"]
      nvidia-tesla-a100 = ["us-west4-b"]
    }
    europe-west4 = {
      nvidia-tesla-t4   = ["europe-west4-a", "europe-west4-b", "europe-west4-c"]
      nvidia-l4         = ["europe-west4-a", "europe-west4-b", "europe-west4-c"]
      nvidia-tesla-a100 = ["europe-west4-a", "europe-west4-b"]
      nvidia-a100-80gb  = ["europe-west4-a"]
    }
    asia-southeast1 = {
      nvidia-tesla-t4   = ["asia-southeast1-a", "asia-southeast1-b", "asia-southeast1-c"]
      nvidia-l4         = ["asia-southeast1-a", "asia-southeast1-b", "asia-southeast1-c"]
      nvidia-tesla-a100 = ["asia-southeast1-b", "asia-southeast1-c"]
      nvidia-a100-80gb  = ["asia-southeast1-c"]
    }
  }
  # The zones the single offer tries, in order: zone first, then the fallbacks (zones are replaced
  # whole: the data disk is zonal and is made anew in the next zone; checkpoints live in the bucket).
  default_fallback_zones = lookup(lookup(local.gpu_zones, local.home_region, {}), var.gpu_type, [])
  zone_order             = distinct(concat([var.zone], var.fallback_zones != null ? var.fallback_zones : local.default_fallback_zones))

  # ---- Offers: what make infra-up / make watch may run on, in order (ops/offers.py walks them) ----
  # With no `offers`, one: machine_type + gpu_count x gpu_type, spot or not, in zone_order. Otherwise
  # each listed offer, its machine type filled in (N1 for attached GPUs: machine_type when that is an
  # N1 type, else n1-standard-4; G2 / A2: the smallest that comes with gpu_count of the GPU) and its
  # zones: `zones`, else the table's zones of its `regions` (zone's region when it names none).
  offers = length(var.offers) == 0 ? [{
    gpu_type = var.gpu_type, gpu_count = var.gpu_count, spot = var.spot, machine_type = var.machine_type,
    zones    = local.zone_order,
    }] : [for o in var.offers : {
    gpu_type  = o.gpu_type
    gpu_count = o.gpu_count
    spot      = o.spot
    machine_type = o.machine_type != null ? o.machine_type : (
      contains(local.attachable_gpus, o.gpu_type) ? (startswith(var.machine_type, "n1-") ? var.machine_type : "n1-standard-4") :
      try([for m in local.machines_by_size : m if local.built_in_gpus[m].type == o.gpu_type && local.built_in_gpus[m].count == o.gpu_count][0], "")
    )
    zones = o.zones != null ? o.zones : distinct(flatten([
      for r in(o.regions != null ? o.regions : [local.home_region]) : lookup(lookup(local.gpu_zones, r, {}), o.gpu_type, [])
    ]))
  }]
  # What is wrong with an offer, each in words that name the fix (compute.tf refuses the plan with them).
  offer_problems = [for i, o in local.offers : (
    o.machine_type == "" ? "offer ${i + 1} (${o.gpu_count} x ${o.gpu_type}): no machine type comes with ${o.gpu_count} of them; set gpu_count to ${join(", ", distinct([for m in local.machines_by_size : tostring(local.built_in_gpus[m].count) if local.built_in_gpus[m].type == o.gpu_type]))}" :
    contains(local.attachable_gpus, o.gpu_type) && contains(keys(local.built_in_gpus), o.machine_type) ? "offer ${i + 1}: ${o.machine_type} comes with its own GPUs, ${o.gpu_type} attaches to N1 machine types only; drop machine_type or set an N1 one such as n1-standard-4" :
    !contains(local.attachable_gpus, o.gpu_type) && lookup(local.built_in_gpus, o.machine_type, { type = "", count = 0 }).type != o.gpu_type ? "offer ${i + 1}: ${o.machine_type} does not come with ${o.gpu_type}; drop machine_type (the smallest with ${o.gpu_count} is chosen) or name one of ${join(", ", [for m in local.machines_by_size : m if local.built_in_gpus[m].type == o.gpu_type])}" :
    !contains(local.attachable_gpus, o.gpu_type) && lookup(local.built_in_gpus, o.machine_type, { type = "", count = 0 }).count != o.gpu_count ? "offer ${i + 1}: ${o.machine_type} comes with ${lookup(local.built_in_gpus, o.machine_type, { type = "", count = 0 }).count} ${o.gpu_type}, not ${o.gpu_count}; drop machine_type or set gpu_count to match" :
    contains(local.attachable_gpus, o.gpu_type) && !contains(local.attachable_counts, o.gpu_count) ? "offer ${i + 1}: an N1 machine takes 1, 2 or 4 attached ${o.gpu_type}, not ${o.gpu_count}" :
    length(o.zones) == 0 ? "offer ${i + 1} (${o.gpu_type}): no zone known for it in ${join(", ", var.offers[i].regions != null ? var.offers[i].regions : [local.home_region])} (infra/locals.tf gpu_zones); list its zones, e.g. zones = [\"us-central1-a\"]" :
    ""
  ) if length(var.offers) > 0] # the single offer of the scalar variables is checked by compute.tf's own preconditions
  offer_problem_list = [for p in local.offer_problems : p if p != ""]

  # Every (offer, zone) in order: what ops tries. The placement is the one ops chose (var.placement,
  # written by make infra-up / make watch to infra/placement.auto.tfvars.json, removed by make
  # infra-down), else the first.
  candidates = flatten([for i, o in local.offers : [for z in o.zones : {
    offer = i + 1, zone = z, machine_type = o.machine_type, gpu_type = o.gpu_type, gpu_count = o.gpu_count, spot = o.spot
  }]])
  placement = var.placement != null ? var.placement : try(local.candidates[0], {
    offer = 1, zone = var.zone, machine_type = var.machine_type, gpu_type = var.gpu_type, gpu_count = var.gpu_count, spot = var.spot
  })
  zone         = local.placement.zone
  machine_type = local.placement.machine_type
  gpu_type     = local.placement.gpu_type
  gpu_count    = local.placement.gpu_count
  spot         = local.placement.spot

  apis = var.enable_apis ? toset([
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "storage.googleapis.com",
  ]) : toset([])
}

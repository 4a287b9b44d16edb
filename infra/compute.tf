# The training VM(s): N1 with attached NVIDIA GPU(s), or G2 / A2 that come with theirs; Debian 12,
# a separate persistent data disk, shielded VM.
# node_count > 1 makes several identical nodes for multi-node training; node 0 is the main process.

# The data disk is its own resource: a change that replaces the VM (machine type, GPU, image)
# detaches it and attaches it to the new VM, so the data, the runs and the model cache survive.
# `make infra-down` deletes it (results live in the bucket) unless KEEP_DATA_DISK=1; there is no
# prevent_destroy here because it would make every `terraform destroy` fail.
resource "google_compute_disk" "data" {
  count = var.node_count

  project = var.project_id
  name    = var.node_count > 1 ? "${var.instance_name}-data-${count.index}" : "${var.instance_name}-data"
  zone    = local.zone
  type    = var.data_disk_type
  size    = var.data_disk_size_gb
  labels  = local.labels

  depends_on = [google_project_service.apis]
}

resource "google_compute_instance" "trainer" {
  count = var.node_count

  project      = var.project_id
  name         = var.node_count > 1 ? "${var.instance_name}-${count.index}" : var.instance_name
  zone         = local.zone
  machine_type = local.machine_type
  labels       = local.labels
  tags         = [local.ssh_tag, local.internal_tag]

  # Terraform may stop the VM to change its machine type or GPUs; nothing else protects it, so
  # `make infra-down` can delete it.
  allow_stopping_for_update = true
  deletion_protection       = false

  # RUNNING by default: a VM stopped by a preemption, its maximum run duration or a maintenance event
  # is started again by the next `terraform apply` (make watch); the refresh before it reads the new
  # ephemeral address, so the outputs never keep a stale one.
  desired_status = var.desired_status

  boot_disk {
    auto_delete = true
    initialize_params {
      image  = var.boot_image
      size   = var.boot_disk_size_gb
      type   = "pd-balanced"
      labels = local.labels
    }
  }

  # On the VM: /dev/disk/by-id/google-<data_disk_device_name>; Ansible formats and mounts it.
  attached_disk {
    source      = google_compute_disk.data[count.index].id
    device_name = var.data_disk_device_name
    mode        = "READ_WRITE"
  }

  # N1 machine types get gpu_count x gpu_type attached; G2 and A2 come with theirs (locals.tf).
  dynamic "guest_accelerator" {
    for_each = local.attach_gpus ? [local.gpu_type] : []
    content {
      type  = guest_accelerator.value
      count = local.gpu_count
    }
  }

  scheduling {
    on_host_maintenance         = "TERMINATE"
    automatic_restart           = local.automatic_restart
    preemptible                 = local.spot
    provisioning_model          = local.provisioning_model
    instance_termination_action = local.instance_termination_action

    dynamic "max_run_duration" {
      for_each = local.max_run_seconds > 0 ? [local.max_run_seconds] : []
      content {
        seconds = max_run_duration.value
      }
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.trainer.id
    # An ephemeral external address: `make ssh`, Ansible and `make train MODE=cloud` reach the VM
    # over SSH from ssh_source_ranges.
    access_config {}
  }

  service_account {
    email = google_service_account.trainer.email
    # Narrow scopes on top of narrow roles: Cloud Storage read/write and log writing only.
    scopes = [
      "https://www.googleapis.com/auth/devstorage.read_write",
      "https://www.googleapis.com/auth/logging.write",
    ]
  }

  # Secure boot stays off by default: Debian's DKMS-built NVIDIA module is signed with a local key
  # the VM's firmware does not trust, so the driver would not load. vTPM and integrity monitoring on.
  shielded_instance_config {
    enable_secure_boot          = var.secure_boot
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    ssh-keys               = "${var.ssh_user}:${local.ssh_public_key}"
    block-project-ssh-keys = "true"
    enable-oslogin         = "FALSE"
    serial-port-enable     = "FALSE"
  }

  lifecycle {
    # The GPUs and the machine type must agree (a variable's validation cannot read another variable
    # before Terraform 1.9, and required_version allows 1.5): for the placement (the first offer's, or
    # the one ops chose), and for every offer, so a wrong one is refused before any VM is made.
    precondition {
      condition     = !local.attach_gpus || contains(local.attachable_gpus, local.gpu_type)
      error_message = "machine_type ${local.machine_type} (N1) takes attached ${join(", ", local.attachable_gpus)} only; ${local.gpu_type} comes with its own machine types: set ${local.gpu_fix}."
    }
    precondition {
      condition     = !local.attach_gpus || !contains(local.attachable_gpus, local.gpu_type) || contains(local.attachable_counts, local.gpu_count)
      error_message = "machine_type ${local.machine_type} takes 1, 2 or 4 attached ${local.gpu_type}: set gpu_count = 1, 2 or 4 (node_count adds VMs for more GPUs)."
    }
    precondition {
      condition     = local.attach_gpus || local.built_in.type == local.gpu_type
      error_message = "machine_type ${local.machine_type} comes with ${local.built_in.count} ${local.built_in.type}: set gpu_type = \"${local.built_in.type}\" and gpu_count = ${local.built_in.count}, or ${local.gpu_fix}."
    }
    precondition {
      condition     = local.attach_gpus || local.built_in.type != local.gpu_type || local.built_in.count == local.gpu_count
      error_message = "machine_type ${local.machine_type} comes with ${local.built_in.count} ${local.built_in.type}: set gpu_count = ${local.built_in.count}, or ${local.gpu_fix}."
    }
    precondition {
      condition     = alltrue([for z in local.zone_order : startswith(z, "${local.home_region}-")])
      error_message = "fallback_zones must be zones of ${local.home_region} (the region of zone); to move across regions list offers (infra/terraform.tfvars.example)."
    }
    precondition {
      condition     = length(local.offer_problem_list) == 0
      error_message = "offers in the tfvars: ${join("; ", local.offer_problem_list)}."
    }
  }

  depends_on = [
    google_project_iam_member.trainer_log_writer,
    google_storage_bucket_iam_member.trainer_objects,
  ]
}

# Read by `make inventory` (ops/inventory.py: the inventory the verbs read too) and ops/terraform.py.

output "instance_name" {
  description = "Name of the training VM (node 0, the main process, when node_count > 1)."
  value       = google_compute_instance.trainer[0].name
}

output "zone" {
  description = "Zone of the VM(s) and data disk(s): the placement's (the first offer's, or the one make watch moved to)."
  value       = local.zone
}

output "zones" {
  description = "Zones make watch tries in order when the VM's zone has no GPU left (zone first)."
  value       = local.zone_order
}

output "instance_status" {
  description = "Status of the VM (node 0) as GCE reported it at the last refresh: RUNNING, TERMINATED, ..."
  value       = google_compute_instance.trainer[0].current_status
}

output "project_id" {
  description = "GCP project holding every resource."
  value       = var.project_id
}

output "external_ip" {
  description = "External IPv4 address of the VM (node 0), reachable over SSH from ssh_source_ranges."
  value       = google_compute_instance.trainer[0].network_interface[0].access_config[0].nat_ip
}

output "ssh_user" {
  description = "Login user for SSH and Ansible."
  value       = var.ssh_user
}

output "bucket_name" {
  description = "Name of the bucket for data, checkpoints and artifacts."
  value       = google_storage_bucket.artifacts.name
}

output "bucket_url" {
  description = "gs:// URL of the bucket (runtime.bucket of the trainer)."
  value       = google_storage_bucket.artifacts.url
}

output "bucket_force_destroy" {
  description = "Whether `make infra-down` deletes the bucket with its objects (force_destroy)."
  value       = google_storage_bucket.artifacts.force_destroy
}

output "data_read_buckets" {
  description = "Names (no gs://, sorted, no repeats) of the other buckets the VM's service account may read (objectViewer, from data_read_buckets); with bucket_name, the only buckets a DATA=gs://<bucket>/... run can read."
  value       = sort([for grant in google_storage_bucket_iam_member.data_read : grant.bucket])
}

output "service_account_email" {
  description = "Email of the VM's dedicated service account."
  value       = google_service_account.trainer.email
}

output "data_disk_device_name" {
  description = "Device name of the attached data disk: /dev/disk/by-id/google-<this> on the VM."
  value       = var.data_disk_device_name
}

output "gpu_type" {
  description = "GPU type of each VM (attached to N1, or the one a G2 / A2 machine type comes with)."
  value       = local.gpu_type
}

output "gpu_count" {
  description = "GPUs per VM."
  value       = local.gpu_count
}

output "node_count" {
  description = "Number of training VMs."
  value       = var.node_count
}

output "instance_names" {
  description = "Names of every training VM, node 0 first."
  value       = google_compute_instance.trainer[*].name
}

output "external_ips" {
  description = "External IPv4 addresses of every VM, node 0 first."
  value       = [for vm in google_compute_instance.trainer : vm.network_interface[0].access_config[0].nat_ip]
}

output "internal_ips" {
  description = "Internal IPv4 addresses of every VM, node 0 first (node 0's is the main process address)."
  value       = [for vm in google_compute_instance.trainer : vm.network_interface[0].network_ip]
}

output "main_process_address" {
  description = "Node 0's internal address, where the other nodes meet it for distributed training (in subnet_cidr)."
  value       = google_compute_instance.trainer[0].network_interface[0].network_ip
}

output "rendezvous_port" {
  description = "TCP port on node 0 for the distributed rendezvous (opened between the nodes when node_count > 1)."
  value       = var.rendezvous_port
}

output "price_inputs" {
  description = "What the VMs cost by the hour is made of (ops/prices.py prices it): machine type, GPUs, spot, and each VM's disks."
  value = {
    machine_type = local.machine_type
    gpu_type     = local.gpu_type
    gpu_count    = local.gpu_count
    spot         = local.spot
    node_count   = var.node_count
    disks = [
      { type = "pd-balanced", gb = var.boot_disk_size_gb },
      { type = var.data_disk_type, gb = var.data_disk_size_gb },
    ]
  }
}

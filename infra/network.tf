# A network of its own: the project's `default` network ships `default-allow-ssh` open to 0.0.0.0/0.
resource "google_compute_network" "trainer" {
  project                 = var.project_id
  name                    = "${var.instance_name}-net"
  auto_create_subnetworks = false
  description             = "Network of the trainer VM(s); SSH only from ssh_source_ranges."

  depends_on = [google_project_service.apis]
}

resource "google_compute_subnetwork" "trainer" {
  project                  = var.project_id
  name                     = "${var.instance_name}-subnet"
  region                   = local.region
  network                  = google_compute_network.trainer.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "ssh" {
  project     = var.project_id
  name        = "${var.instance_name}-allow-ssh"
  network     = google_compute_network.trainer.id
  description = "SSH to the trainer VM(s) from ssh_source_ranges only."
  direction   = "INGRESS"
  priority    = 1000

  source_ranges = var.ssh_source_ranges
  target_tags   = [local.ssh_tag]

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Several nodes (node_count > 1) talk to each other for distributed training, and only to each other (source
# and target: the nodes' own tag): TCP to node 0's rendezvous port (torch's c10d store, where every process
# meets), and TCP to the kernel's ephemeral port range, where NCCL (GPUs) and gloo listen for the
# process-to-process connections they open after the rendezvous (they cannot be pinned to fixed ports).
# No other port, protocol or source opens; a single VM gets no such rule.
locals {
  collective_ports = "32768-60999" # Linux's default net.ipv4.ip_local_port_range (Debian 12)
}

resource "google_compute_firewall" "internal" {
  count = var.node_count > 1 ? 1 : 0

  project     = var.project_id
  name        = "${var.instance_name}-allow-internal"
  network     = google_compute_network.trainer.id
  description = "Distributed training between the trainer nodes: the rendezvous port and the collectives' ports."
  direction   = "INGRESS"
  priority    = 1000

  source_tags = [local.internal_tag]
  target_tags = [local.internal_tag]

  allow {
    protocol = "tcp"
    ports    = [tostring(var.rendezvous_port), local.collective_ports]
  }

  log_config {
    metadata = "EXCLUDE_ALL_METADATA"
  }
}

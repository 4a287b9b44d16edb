# ---- Project and placement ----------------------------------------------------------------------

variable "project_id" {
  type        = string
  description = "GCP project id that gets the VM, disk, bucket and service account."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project id: 6-30 characters, lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "zone" {
  type        = string
  description = "Compute zone of the VM and its data disk; the region (subnet, bucket) is derived from it. Pick one that offers the GPU type."
  default     = "us-central1-a"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+-[a-z]$", var.zone))
    error_message = "zone must look like us-central1-a (region plus a one-letter zone suffix)."
  }
}

variable "instance_name" {
  type        = string
  description = "Name of the VM; also the prefix of the disk, network, firewall rules and service account names."
  default     = "tweet-trainer"

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{2,18}[a-z0-9]$", var.instance_name))
    error_message = "instance_name must be 4-20 characters: lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "labels" {
  type        = map(string)
  description = "Extra labels for every labelled resource (app and managed-by are always set)."
  default     = {}

  validation {
    condition = alltrue([
      for k, v in var.labels : can(regex("^[a-z][-_a-z0-9]{0,62}$", k)) && can(regex("^[-_a-z0-9]{0,63}$", v))
    ])
    error_message = "labels: keys must start with a lowercase letter; keys and values use lowercase letters, digits, - and _ (63 characters at most)."
  }
}

variable "enable_apis" {
  type        = bool
  description = "Enable the Compute, IAM, Logging, Storage and Resource Manager APIs in the project (never disabled on destroy)."
  default     = true
}

variable "fallback_zones" {
  type        = list(string)
  description = "Zones of zone's region that `make watch` moves the VM to, in this order, when zone has no GPU left (ZONE_RESOURCE_POOL_EXHAUSTED); null = the region's zones that offer gpu_type (locals.tf), [] = never move."
  default     = null

  validation {
    condition     = alltrue([for z in var.fallback_zones == null ? [] : var.fallback_zones : can(regex("^[a-z]+-[a-z]+[0-9]+-[a-z]$", z))])
    error_message = "fallback_zones must list zones such as us-central1-b (region plus a one-letter zone suffix)."
  }
}

variable "desired_status" {
  type        = string
  description = "What the VM should be: RUNNING (a converge starts a stopped or preempted VM again) or TERMINATED (stopped: only the disks are billed)."
  default     = "RUNNING"

  validation {
    condition     = contains(["RUNNING", "TERMINATED"], var.desired_status)
    error_message = "desired_status must be RUNNING or TERMINATED (a VM with GPUs cannot be SUSPENDED)."
  }
}

# ---- Machine and GPU ----------------------------------------------------------------------------

variable "machine_type" {
  type        = string
  description = "Machine type of the VM. N1 types take attached GPUs (gpu_type T4, P4, V100, P100); G2 types (g2-standard-4 ... 96) come with L4s, A2 types with A100s (a2-highgpu-*, a2-megagpu-16g: 40GB; a2-ultragpu-*: 80GB), and gpu_type / gpu_count must name those."
  default     = "n1-standard-4"

  validation {
    condition     = can(regex("^(n1-(standard|highmem|highcpu)-[0-9]+|g2-standard-(4|8|12|16|24|32|48|96)|a2-highgpu-(1|2|4|8)g|a2-megagpu-16g|a2-ultragpu-(1|2|4|8)g)$", var.machine_type))
    error_message = "machine_type must be an N1 type (n1-standard-4, n1-highmem-8, ...) for an attached T4, P4, V100 or P100, a G2 type with L4s (g2-standard-4, 8, 12, 16, 24, 32, 48, 96), or an A2 type with A100s (a2-highgpu-1g, 2g, 4g, 8g, a2-megagpu-16g: 40GB; a2-ultragpu-1g, 2g, 4g, 8g: 80GB)."
  }
}

variable "gpu_type" {
  type        = string
  description = "GPU type of each VM: attached to an N1 machine type (nvidia-tesla-t4, -p4, -v100, -p100), or the one a G2 / A2 machine type comes with (nvidia-l4, nvidia-tesla-a100, nvidia-a100-80gb)."
  default     = "nvidia-tesla-t4"

  validation {
    condition     = contains(["nvidia-tesla-t4", "nvidia-tesla-p4", "nvidia-tesla-v100", "nvidia-tesla-p100", "nvidia-l4", "nvidia-tesla-a100", "nvidia-a100-80gb"], var.gpu_type)
    error_message = "gpu_type must be one of nvidia-tesla-t4, nvidia-tesla-p4, nvidia-tesla-v100, nvidia-tesla-p100 (attached to N1 VMs), nvidia-l4 (G2), nvidia-tesla-a100 or nvidia-a100-80gb (A2)."
  }
}

variable "gpu_count" {
  type        = number
  description = "GPUs per VM: 1, 2 or 4 attached to an N1 machine type; for G2 / A2 the number the machine type comes with (up to 8, 16 for a2-megagpu-16g). The trainer runs one process per GPU."
  default     = 1

  validation {
    condition     = contains([1, 2, 4, 8, 16], var.gpu_count)
    error_message = "gpu_count must be 1, 2 or 4 (N1), or 8 or 16 with a G2 / A2 machine type that has them."
  }
}

variable "node_count" {
  type        = number
  description = "Number of identical VMs for multi-node training (node 0 is the main process). 1 for a single VM."
  default     = 1

  validation {
    condition     = var.node_count >= 1 && var.node_count <= 8 && floor(var.node_count) == var.node_count
    error_message = "node_count must be a whole number from 1 to 8."
  }
}

variable "rendezvous_port" {
  type        = number
  description = "TCP port on node 0 where the processes of a multi-node run meet (accelerate's main_process_port); opened between the nodes only."
  default     = 29500

  validation {
    condition     = var.rendezvous_port >= 1024 && var.rendezvous_port <= 32767 && floor(var.rendezvous_port) == var.rendezvous_port
    error_message = "rendezvous_port must be a whole number from 1024 to 32767 (below the ephemeral range the collectives use)."
  }
}

variable "boot_image" {
  type        = string
  description = "Boot image (Debian 12: the Ansible roles install the NVIDIA driver from Debian's non-free archive)."
  default     = "debian-cloud/debian-12"

  validation {
    condition     = can(regex("^debian-cloud/debian-12", var.boot_image))
    error_message = "boot_image must be a Debian 12 image from debian-cloud (the Ansible roles target Debian 12)."
  }
}

variable "boot_disk_size_gb" {
  type        = number
  description = "Boot disk size in GB (OS, NVIDIA driver, Docker images)."
  default     = 50

  validation {
    condition     = var.boot_disk_size_gb >= 30 && var.boot_disk_size_gb <= 2000
    error_message = "boot_disk_size_gb must be between 30 and 2000 (the driver and the CUDA image need about 25 GB)."
  }
}

variable "secure_boot" {
  type        = bool
  description = "Shielded VM secure boot. Off by default: the DKMS-built NVIDIA module is not signed by a key the firmware trusts."
  default     = false
}

# ---- Offers: several GPU kinds, regions, spot or not, tried in order ---------------------------------

variable "offers" {
  type = list(object({
    gpu_type     = string
    gpu_count    = optional(number, 1)
    spot         = optional(bool, false)
    machine_type = optional(string)
    regions      = optional(list(string))
    zones        = optional(list(string))
  }))
  description = "What the VM may run on, in order of preference (see offer_order): each a GPU type and count, spot or on demand, and regions (their zones from infra/locals.tf's gpu_zones) or zones. make infra-up and make watch skip offers without GPU quota and move to the next on a stock-out, a quota error or a zone without the GPU; the bucket stays in zone's region. [] = one offer: machine_type, gpu_count x gpu_type, spot, in zone then fallback_zones."
  default     = []

  validation {
    condition     = alltrue([for o in var.offers : contains(["nvidia-tesla-t4", "nvidia-tesla-p4", "nvidia-tesla-v100", "nvidia-tesla-p100", "nvidia-l4", "nvidia-tesla-a100", "nvidia-a100-80gb"], o.gpu_type)])
    error_message = "offers: each gpu_type must be one of nvidia-tesla-t4, nvidia-tesla-p4, nvidia-tesla-v100, nvidia-tesla-p100 (N1), nvidia-l4 (G2), nvidia-tesla-a100 or nvidia-a100-80gb (A2)."
  }

  validation {
    condition     = alltrue([for o in var.offers : contains([1, 2, 4, 8, 16], o.gpu_count)])
    error_message = "offers: each gpu_count must be 1, 2 or 4 (N1), or 8 or 16 with a G2 / A2 machine type that has them."
  }

  validation {
    condition     = alltrue([for o in var.offers : o.regions == null || o.zones == null])
    error_message = "offers: an offer names regions (their GPU zones from infra/locals.tf) or zones, not both."
  }

  validation {
    condition = alltrue(flatten([for o in var.offers : concat(
      [for r in(o.regions == null ? [] : o.regions) : can(regex("^[a-z]+-[a-z]+[0-9]+$", r))],
      [for z in(o.zones == null ? [] : o.zones) : can(regex("^[a-z]+-[a-z]+[0-9]+-[a-z]$", z))],
    )]))
    error_message = "offers: regions look like us-central1 and zones like us-central1-a."
  }

  validation {
    condition     = alltrue([for o in var.offers : o.machine_type == null || can(regex("^(n1-(standard|highmem|highcpu)-[0-9]+|g2-standard-(4|8|12|16|24|32|48|96)|a2-highgpu-(1|2|4|8)g|a2-megagpu-16g|a2-ultragpu-(1|2|4|8)g)$", o.machine_type))])
    error_message = "offers: a machine_type must be an N1 type (n1-standard-4, ...) for T4, P4, V100 or P100, a G2 type for L4, or an A2 type for A100; leave it out to get the smallest that fits."
  }
}

variable "offer_order" {
  type        = string
  description = "How make infra-up / make watch order the offers: \"preference\" (as listed) or \"cheapest\" (by the estimated cost of the whole run: its training FLOPs at each GPU's peak x an MFU, times the hourly price; python -m ops offers shows the figures)."
  default     = "preference"

  validation {
    condition     = contains(["preference", "cheapest"], var.offer_order)
    error_message = "offer_order must be \"preference\" (the offers as listed) or \"cheapest\" (by estimated run cost)."
  }
}

variable "placement" {
  type = object({
    offer        = optional(number, 0)
    zone         = string
    machine_type = string
    gpu_type     = string
    gpu_count    = number
    spot         = bool
  })
  description = "Set by make infra-up / make watch (infra/placement.auto.tfvars.json), not by hand: the offer and zone the VM runs on now. null = the first offer's first zone."
  default     = null

  validation {
    condition     = var.placement == null || can(regex("^[a-z]+-[a-z]+[0-9]+-[a-z]$", var.placement.zone))
    error_message = "placement is written by make infra-up and make watch: delete infra/placement.auto.tfvars.json (make infra-down does) rather than edit it."
  }
}

# ---- Scheduling ---------------------------------------------------------------------------------

variable "spot" {
  type        = bool
  description = "Use SPOT provisioning (much cheaper, may be preempted at any time; no automatic restart)."
  default     = false
}

variable "termination_action" {
  type        = string
  description = "What happens when a spot VM is preempted or the maximum run duration is reached: STOP (disks kept) or DELETE."
  default     = "STOP"

  validation {
    condition     = contains(["STOP", "DELETE"], var.termination_action)
    error_message = "termination_action must be STOP or DELETE."
  }
}

variable "max_run_duration_hours" {
  type        = number
  description = "Stop (or delete, see termination_action) the VM after this many hours of running, so a forgotten VM stops billing. 0 = no limit."
  default     = 12

  validation {
    condition     = var.max_run_duration_hours >= 0 && var.max_run_duration_hours <= 720
    error_message = "max_run_duration_hours must be between 0 (no limit) and 720."
  }
}

# ---- Data disk ----------------------------------------------------------------------------------

variable "data_disk_size_gb" {
  type        = number
  description = "Size in GB of the persistent data disk (data, runs, model cache), kept across VM replacement."
  default     = 100

  validation {
    condition     = var.data_disk_size_gb >= 10 && var.data_disk_size_gb <= 65536
    error_message = "data_disk_size_gb must be between 10 and 65536."
  }
}

variable "data_disk_type" {
  type        = string
  description = "Persistent disk type of the data disk."
  default     = "pd-balanced"

  validation {
    condition     = contains(["pd-standard", "pd-balanced", "pd-ssd"], var.data_disk_type)
    error_message = "data_disk_type must be pd-standard, pd-balanced or pd-ssd."
  }
}

variable "data_disk_device_name" {
  type        = string
  description = "Stable device name of the data disk: it appears on the VM as /dev/disk/by-id/google-<name>."
  default     = "trainer-data"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", var.data_disk_device_name))
    error_message = "data_disk_device_name must be 1-63 lowercase letters, digits and hyphens, starting with a letter."
  }
}

# ---- Bucket -------------------------------------------------------------------------------------

variable "bucket_name" {
  type        = string
  description = "Name of the GCS bucket for data, checkpoints and artifacts; empty = <project_id>-<instance_name>."
  default     = ""

  validation {
    condition     = var.bucket_name == "" || (can(regex("^[a-z0-9][-_a-z0-9]{1,61}[a-z0-9]$", var.bucket_name)) && !startswith(var.bucket_name, "goog"))
    error_message = "bucket_name must be 3-63 lowercase letters, digits, - and _, start and end with a letter or digit, and not start with goog."
  }
}

variable "bucket_location" {
  type        = string
  description = "Location of the bucket (a region such as us-central1, or a multi-region such as US); empty = the VM's region."
  default     = ""

  validation {
    condition     = var.bucket_location == "" || can(regex("^([A-Za-z]+|[a-z]+-[a-z]+[0-9]+|[A-Z]+-[A-Z]+[0-9]+)$", var.bucket_location))
    error_message = "bucket_location must be a region (us-central1) or a multi-region (US, EU, ASIA), or empty for the VM's region."
  }
}

variable "force_destroy" {
  type        = bool
  description = "Let `make infra-down` delete the bucket with every object in it (the trained models too). Off by default."
  default     = false
}

variable "checkpoint_retention_days" {
  type        = number
  description = "Delete objects under checkpoints/ in the bucket this many days after they were written."
  default     = 30

  validation {
    condition     = var.checkpoint_retention_days >= 1 && floor(var.checkpoint_retention_days) == var.checkpoint_retention_days
    error_message = "checkpoint_retention_days must be a whole number of days, at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  type        = number
  description = "Keep overwritten or deleted object versions this many days, then delete them."
  default     = 7

  validation {
    condition     = var.noncurrent_version_retention_days >= 1 && floor(var.noncurrent_version_retention_days) == var.noncurrent_version_retention_days
    error_message = "noncurrent_version_retention_days must be a whole number of days, at least 1."
  }
}

variable "data_read_buckets" {
  type        = list(string)
  description = "Other GCS buckets the VM may read training data from (DATA=gs://<one of these>/...): bucket names without gs://. The VM's service account gets roles/storage.objectViewer (objects.get and objects.list, nothing else) on each; its own bucket needs no entry. [] = only its own bucket."
  default     = []

  validation {
    condition     = alltrue([for b in var.data_read_buckets : !strcontains(b, "/") && !strcontains(b, ":")])
    error_message = "data_read_buckets lists bucket names, not gs:// URLs or paths: for DATA=gs://other-bucket/tweets.csv write data_read_buckets = [\"other-bucket\"] in infra/terraform.tfvars."
  }

  validation {
    condition = alltrue([
      for b in var.data_read_buckets :
      can(regex("^[a-z0-9][-_.a-z0-9]{1,220}[a-z0-9]$", b)) && alltrue([for part in split(".", b) : length(part) >= 1 && length(part) <= 63])
      && !startswith(b, "goog") && !strcontains(b, "google") && !can(regex("^[0-9]+([.][0-9]+){3}$", b))
    ])
    error_message = "data_read_buckets: each entry must be a GCS bucket name such as \"other-bucket\": 3-63 lowercase letters, digits, - and _ (dots allowed, up to 222 characters with 63 between dots), starting and ending with a letter or digit, not starting with goog, not containing google, not an IP address."
  }
}

# ---- Network and SSH ----------------------------------------------------------------------------

variable "ssh_source_ranges" {
  type        = list(string)
  description = "CIDR ranges allowed to SSH to the VM (e.g. [\"203.0.113.7/32\"], your address: curl -s ifconfig.me). Required; never open to the world."

  validation {
    condition     = length(var.ssh_source_ranges) > 0
    error_message = "ssh_source_ranges must list at least one CIDR range, e.g. [\"203.0.113.7/32\"]."
  }

  validation {
    condition     = alltrue([for r in var.ssh_source_ranges : can(cidrhost(r, 0))])
    error_message = "ssh_source_ranges must hold CIDR ranges such as 203.0.113.7/32."
  }

  validation {
    condition     = alltrue([for r in var.ssh_source_ranges : !can(regex("/0$", r))])
    error_message = "ssh_source_ranges must not open SSH to the whole internet (0.0.0.0/0, ::/0): give your own address or range."
  }
}

variable "subnet_cidr" {
  type        = string
  description = "IPv4 range of the trainer's subnet."
  default     = "10.42.0.0/24"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0)) && can(regex("^[0-9.]+/[0-9]+$", var.subnet_cidr))
    error_message = "subnet_cidr must be an IPv4 CIDR range such as 10.42.0.0/24."
  }
}

variable "ssh_user" {
  type        = string
  description = "Login user created on the VM for SSH and Ansible (sudo without password)."
  default     = "trainer"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh_user)) && var.ssh_user != "root"
    error_message = "ssh_user must be a Linux user name (lowercase, 32 characters at most) other than root."
  }
}

variable "ssh_public_key_path" {
  type        = string
  description = "Public key installed for ssh_user; its private half is SSH_KEY for make and Ansible."
  default     = "~/.ssh/id_ed25519.pub"

  validation {
    condition     = fileexists(pathexpand(var.ssh_public_key_path))
    error_message = "ssh_public_key_path: the file does not exist; make a key with ssh-keygen -t ed25519 or point to your public key."
  }
}

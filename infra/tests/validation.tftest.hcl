# `terraform test` (run by tests/infra/test_terraform.py wherever the google provider can be installed):
# the module's defaults and every variable validation, planned against a mocked google provider.

mock_provider "google" {}

variables {
  project_id          = "test-project-123"
  ssh_source_ranges   = ["203.0.113.7/32"]
  ssh_public_key_path = "tests/fixtures/id_test.pub"
}

run "defaults_make_one_t4_vm_with_a_data_disk_and_a_private_bucket" {
  command = plan

  assert {
    condition     = length(google_compute_instance.trainer) == 1 && google_compute_instance.trainer[0].machine_type == "n1-standard-4"
    error_message = "one n1-standard-4 VM by default"
  }
  assert {
    condition     = google_compute_instance.trainer[0].guest_accelerator[0].type == "nvidia-tesla-t4" && google_compute_instance.trainer[0].guest_accelerator[0].count == 1
    error_message = "one nvidia-tesla-t4 by default"
  }
  assert {
    condition     = google_compute_instance.trainer[0].scheduling[0].on_host_maintenance == "TERMINATE"
    error_message = "a GPU VM must terminate on host maintenance"
  }
  assert {
    condition     = google_compute_instance.trainer[0].scheduling[0].provisioning_model == "STANDARD" && google_compute_instance.trainer[0].scheduling[0].automatic_restart == true
    error_message = "standard provisioning with automatic restart by default"
  }
  assert {
    condition     = google_compute_instance.trainer[0].scheduling[0].max_run_duration[0].seconds == 43200 && google_compute_instance.trainer[0].scheduling[0].instance_termination_action == "STOP"
    error_message = "a 12 h maximum run duration that stops the VM by default"
  }
  assert {
    condition     = google_compute_instance.trainer[0].attached_disk[0].device_name == "trainer-data"
    error_message = "the data disk is attached under its stable device name"
  }
  assert {
    condition     = google_compute_instance.trainer[0].shielded_instance_config[0].enable_vtpm && google_compute_instance.trainer[0].shielded_instance_config[0].enable_integrity_monitoring
    error_message = "shielded VM (vTPM, integrity monitoring) on"
  }
  assert {
    condition     = google_storage_bucket.artifacts.name == "test-project-123-tweet-trainer" && google_storage_bucket.artifacts.location == "US-CENTRAL1"
    error_message = "the bucket is named after the project and lives in the VM's region"
  }
  assert {
    condition     = google_storage_bucket.artifacts.public_access_prevention == "enforced" && google_storage_bucket.artifacts.uniform_bucket_level_access == true
    error_message = "the bucket is private"
  }
  assert {
    condition     = google_storage_bucket.artifacts.force_destroy == false && google_storage_bucket.artifacts.versioning[0].enabled == true
    error_message = "the bucket is versioned and survives infra-down by default"
  }
  assert {
    condition     = google_compute_firewall.ssh.source_ranges == toset(["203.0.113.7/32"]) && length(google_compute_firewall.internal) == 0
    error_message = "SSH only from ssh_source_ranges; no internal rule for one node"
  }
  assert {
    condition     = google_compute_instance.trainer[0].labels["app"] == "tweet-trainer" && google_compute_disk.data[0].labels["managed-by"] == "terraform"
    error_message = "labels on the VM and the disk"
  }
  assert {
    condition     = output.data_disk_device_name == "trainer-data" && output.gpu_count == 1 && output.ssh_user == "trainer"
    error_message = "outputs for the inventory"
  }
}

run "ssh_open_to_the_world_is_refused" {
  command = plan
  variables { ssh_source_ranges = ["203.0.113.7/32", "0.0.0.0/0"] }
  expect_failures = [var.ssh_source_ranges]
}

run "ssh_open_to_the_ipv6_world_is_refused" {
  command = plan
  variables { ssh_source_ranges = ["::/0"] }
  expect_failures = [var.ssh_source_ranges]
}

run "ssh_ranges_must_be_cidrs" {
  command = plan
  variables { ssh_source_ranges = ["my laptop"] }
  expect_failures = [var.ssh_source_ranges]
}

run "ssh_ranges_must_not_be_empty" {
  command = plan
  variables { ssh_source_ranges = [] }
  expect_failures = [var.ssh_source_ranges]
}

run "gpus_need_an_n1_machine_type" {
  command = plan
  variables { machine_type = "e2-standard-4" }
  expect_failures = [var.machine_type]
}

run "unknown_gpu_type_is_refused" {
  command = plan
  variables { gpu_type = "nvidia-tesla-t5" }
  expect_failures = [var.gpu_type]
}

run "three_gpus_are_refused" {
  command = plan
  variables { gpu_count = 3 }
  expect_failures = [var.gpu_count]
}

run "a_region_is_not_a_zone" {
  command = plan
  variables { zone = "us-central1" }
  expect_failures = [var.zone]
}

run "bucket_name_pattern" {
  command = plan
  variables { bucket_name = "My_Bucket" }
  expect_failures = [var.bucket_name]
}

run "termination_action_is_stop_or_delete" {
  command = plan
  variables { termination_action = "HIBERNATE" }
  expect_failures = [var.termination_action]
}

run "root_is_not_an_ssh_user" {
  command = plan
  variables { ssh_user = "root" }
  expect_failures = [var.ssh_user]
}

run "the_public_key_must_exist" {
  command = plan
  variables { ssh_public_key_path = "tests/fixtures/missing.pub" }
  expect_failures = [var.ssh_public_key_path]
}

run "project_id_pattern" {
  command = plan
  variables { project_id = "Bad Project" }
  expect_failures = [var.project_id]
}

run "node_count_is_bounded" {
  command = plan
  variables { node_count = 9 }
  expect_failures = [var.node_count]
}

run "rendezvous_port_below_the_ephemeral_range" {
  command = plan
  variables { rendezvous_port = 40000 }
  expect_failures = [var.rendezvous_port]
}

run "instance_name_pattern" {
  command = plan
  variables { instance_name = "X" }
  expect_failures = [var.instance_name]
}

run "label_keys_pattern" {
  command = plan
  variables { labels = { "Bad Key" = "x" } }
  expect_failures = [var.labels]
}

run "debian_12_only" {
  command = plan
  variables { boot_image = "ubuntu-os-cloud/ubuntu-2204-lts" }
  expect_failures = [var.boot_image]
}

run "boot_disk_fits_the_driver_and_images" {
  command = plan
  variables { boot_disk_size_gb = 10 }
  expect_failures = [var.boot_disk_size_gb]
}

run "max_run_duration_is_not_negative" {
  command = plan
  variables { max_run_duration_hours = -1 }
  expect_failures = [var.max_run_duration_hours]
}

run "data_disk_size_is_bounded" {
  command = plan
  variables { data_disk_size_gb = 5 }
  expect_failures = [var.data_disk_size_gb]
}

run "data_disk_type_from_the_list" {
  command = plan
  variables { data_disk_type = "pd-extreme" }
  expect_failures = [var.data_disk_type]
}

run "device_name_pattern" {
  command = plan
  variables { data_disk_device_name = "Data Disk" }
  expect_failures = [var.data_disk_device_name]
}

run "bucket_location_pattern" {
  command = plan
  variables { bucket_location = "us central" }
  expect_failures = [var.bucket_location]
}

run "checkpoint_retention_at_least_a_day" {
  command = plan
  variables { checkpoint_retention_days = 0 }
  expect_failures = [var.checkpoint_retention_days]
}

run "noncurrent_retention_whole_days" {
  command = plan
  variables { noncurrent_version_retention_days = 0.5 }
  expect_failures = [var.noncurrent_version_retention_days]
}

run "subnet_is_a_cidr" {
  command = plan
  variables { subnet_cidr = "10.42.0.0" }
  expect_failures = [var.subnet_cidr]
}

run "data_read_buckets_grant_object_viewer_only" {
  command = plan
  variables { data_read_buckets = ["other-bucket", "shared.data.example.com", "test-project-123-tweet-trainer"] }

  assert {
    condition     = tolist(keys(google_storage_bucket_iam_member.data_read)) == tolist(["other-bucket", "shared.data.example.com"])
    error_message = "one grant per other bucket; the VM's own bucket is left out"
  }
  assert {
    condition     = alltrue([for g in google_storage_bucket_iam_member.data_read : g.role == "roles/storage.objectViewer"])
    error_message = "read-only: objectViewer"
  }
  assert {
    condition     = output.data_read_buckets == tolist(["other-bucket", "shared.data.example.com"])
    error_message = "the output lists the buckets granted"
  }
}

run "data_read_buckets_are_names_not_urls" {
  command = plan
  variables { data_read_buckets = ["gs://other-bucket"] }
  expect_failures = [var.data_read_buckets]
}

run "data_read_buckets_pattern" {
  command = plan
  variables { data_read_buckets = ["Other_Bucket"] }
  expect_failures = [var.data_read_buckets]
}

run "an_l4_vm_is_a_g2_machine_type_with_nothing_attached" {
  command = plan
  variables {
    machine_type = "g2-standard-4"
    gpu_type     = "nvidia-l4"
    spot         = true
  }

  assert {
    condition     = length(google_compute_instance.trainer[0].guest_accelerator) == 0
    error_message = "a G2 machine type comes with its L4: nothing is attached"
  }
  assert {
    condition     = google_compute_instance.trainer[0].scheduling[0].on_host_maintenance == "TERMINATE" && google_compute_instance.trainer[0].scheduling[0].provisioning_model == "SPOT"
    error_message = "a G2 VM terminates on host maintenance and can be spot"
  }
  assert {
    condition     = output.price_inputs.gpu_type == "nvidia-l4" && output.price_inputs.gpu_count == 1
    error_message = "price_inputs name the GPU the machine type comes with"
  }
}

run "a100s_come_with_a2_machine_types" {
  command = plan
  variables {
    machine_type = "a2-ultragpu-4g"
    gpu_type     = "nvidia-a100-80gb"
    gpu_count    = 4
  }

  assert {
    condition     = length(google_compute_instance.trainer[0].guest_accelerator) == 0 && output.gpu_count == 4
    error_message = "an A2 machine type comes with its A100s: nothing is attached"
  }
}

run "an_l4_is_not_attached_to_n1" {
  command = plan
  variables { gpu_type = "nvidia-l4" }
  expect_failures = [google_compute_instance.trainer]
}

run "a_t4_does_not_come_with_g2" {
  command = plan
  variables { machine_type = "g2-standard-8" }
  expect_failures = [google_compute_instance.trainer]
}

run "an_a100_does_not_come_with_g2" {
  command = plan
  variables {
    machine_type = "g2-standard-4"
    gpu_type     = "nvidia-tesla-a100"
  }
  expect_failures = [google_compute_instance.trainer]
}

run "g2_standard_4_has_one_l4_not_two" {
  command = plan
  variables {
    machine_type = "g2-standard-4"
    gpu_type     = "nvidia-l4"
    gpu_count    = 2
  }
  expect_failures = [google_compute_instance.trainer]
}

run "n1_takes_at_most_four_attached_gpus" {
  command = plan
  variables {
    machine_type = "n1-standard-32"
    gpu_count    = 8
  }
  expect_failures = [google_compute_instance.trainer]
}

run "unknown_a2_machine_type_is_refused" {
  command = plan
  variables { machine_type = "a2-highgpu-3g" }
  expect_failures = [var.machine_type]
}

# ---- offers ---------------------------------------------------------------------------------------

run "offers_resolve_machine_types_and_zones_and_the_first_is_the_placement" {
  command = plan
  variables {
    offers = [
      { gpu_type = "nvidia-l4", spot = true, regions = ["us-central1"] },
      { gpu_type = "nvidia-tesla-a100", gpu_count = 2, zones = ["us-central1-b"] },
      { gpu_type = "nvidia-tesla-t4", regions = ["us-east1", "us-central1"] },
    ]
  }

  assert {
    condition     = [for c in local.candidates : "${c.offer} ${c.zone} ${c.machine_type}"] == ["1 us-central1-a g2-standard-4", "1 us-central1-b g2-standard-4", "1 us-central1-c g2-standard-4", "2 us-central1-b a2-highgpu-2g", "3 us-east1-c n1-standard-4", "3 us-east1-d n1-standard-4", "3 us-central1-a n1-standard-4", "3 us-central1-b n1-standard-4", "3 us-central1-c n1-standard-4", "3 us-central1-f n1-standard-4"]
    error_message = "each offer's machine type is the smallest that fits, its zones those of its regions in order"
  }
  assert {
    condition     = google_compute_instance.trainer[0].machine_type == "g2-standard-4" && google_compute_instance.trainer[0].zone == "us-central1-a" && length(google_compute_instance.trainer[0].guest_accelerator) == 0 && google_compute_instance.trainer[0].scheduling[0].provisioning_model == "SPOT"
    error_message = "without a placement the VM is the first offer in its first zone"
  }
}

run "a_placement_moves_the_vm_and_its_disk_but_not_the_bucket" {
  command = plan
  variables {
    placement = { offer = 2, zone = "us-east1-c", machine_type = "n1-standard-4", gpu_type = "nvidia-tesla-t4", gpu_count = 1, spot = true }
  }

  assert {
    condition     = google_compute_instance.trainer[0].zone == "us-east1-c" && google_compute_disk.data[0].zone == "us-east1-c" && google_compute_subnetwork.trainer.region == "us-east1"
    error_message = "the VM, its data disk and its subnet follow the placement"
  }
  assert {
    condition     = google_storage_bucket.artifacts.location == "US-CENTRAL1"
    error_message = "the bucket stays in zone's region"
  }
}

run "an_offer_with_an_unknown_gpu_type_is_refused" {
  command = plan
  variables { offers = [{ gpu_type = "nvidia-h100-80gb" }] }
  expect_failures = [var.offers]
}

run "an_offer_names_regions_or_zones_not_both" {
  command = plan
  variables { offers = [{ gpu_type = "nvidia-l4", regions = ["us-central1"], zones = ["us-central1-a"] }] }
  expect_failures = [var.offers]
}

run "an_offer_with_a_count_no_machine_has_is_refused" {
  command = plan
  variables { offers = [{ gpu_type = "nvidia-l4", gpu_count = 3 }] }
  expect_failures = [var.offers]
}

run "an_offer_region_must_look_like_one" {
  command = plan
  variables { offers = [{ gpu_type = "nvidia-l4", regions = ["us-central1-a"] }] }
  expect_failures = [var.offers]
}

run "an_offer_machine_type_must_be_a_gpu_machine_type" {
  command = plan
  variables { offers = [{ gpu_type = "nvidia-l4", machine_type = "e2-standard-4" }] }
  expect_failures = [var.offers]
}

run "a_t4_offer_on_a_g2_machine_type_is_refused_by_the_vm" {
  command = plan
  variables { offers = [{ gpu_type = "nvidia-tesla-t4", machine_type = "g2-standard-4" }] }
  expect_failures = [google_compute_instance.trainer]
}

run "offer_order_is_preference_or_cheapest" {
  command = plan
  variables { offer_order = "fastest" }
  expect_failures = [var.offer_order]
}

# `terraform test`: the VM's desired status (converging restarts a stopped VM) and the zone fallback list.

mock_provider "google" {}

variables {
  project_id          = "test-project-123"
  ssh_source_ranges   = ["198.51.100.0/24"]
  ssh_public_key_path = "tests/fixtures/id_test.pub"
}

run "the_vm_is_wanted_running" {
  command = plan

  assert {
    condition     = google_compute_instance.trainer[0].desired_status == "RUNNING"
    error_message = "desired_status is RUNNING by default, so a converge starts a preempted VM"
  }
}

run "the_vm_can_be_stopped_declaratively" {
  command = plan
  variables { desired_status = "TERMINATED" }

  assert {
    condition     = google_compute_instance.trainer[0].desired_status == "TERMINATED"
    error_message = "desired_status reaches the VM"
  }
}

run "suspending_a_gpu_vm_is_refused" {
  command = plan
  variables { desired_status = "SUSPENDED" }

  expect_failures = [var.desired_status]
}

run "t4_zones_of_us_central1_follow_the_configured_zone" {
  command = plan
  variables { zone = "us-central1-c" }

  assert {
    condition     = output.zones == tolist(["us-central1-c", "us-central1-a", "us-central1-b", "us-central1-f"])
    error_message = "the configured zone first, then the region's other T4 zones"
  }
}

run "p100_zones_differ" {
  command = plan
  variables {
    zone     = "us-central1-f"
    gpu_type = "nvidia-tesla-p100"
  }

  assert {
    condition     = output.zones == tolist(["us-central1-f", "us-central1-c"])
    error_message = "only the zones that offer the GPU type"
  }
}

run "a_region_without_a_table_stays_in_its_zone" {
  command = plan
  variables { zone = "europe-west1-b" }

  assert {
    condition     = output.zones == tolist(["europe-west1-b"])
    error_message = "no default fallback outside the table"
  }
}

run "fallback_zones_can_be_given_or_turned_off" {
  command = plan
  variables { fallback_zones = ["us-central1-f", "us-central1-a"] }

  assert {
    condition     = output.zones == tolist(["us-central1-a", "us-central1-f"])
    error_message = "zone first, then the given fallbacks in order, without repeats"
  }
}

run "no_fallback" {
  command = plan
  variables { fallback_zones = [] }

  assert {
    condition     = output.zones == tolist(["us-central1-a"])
    error_message = "[] never moves the VM"
  }
}

run "a_malformed_fallback_zone_is_refused" {
  command = plan
  variables { fallback_zones = ["us-central1"] }

  expect_failures = [var.fallback_zones]
}

run "a_fallback_zone_of_another_region_is_refused" {
  command = plan
  variables { fallback_zones = ["us-east1-c"] }

  expect_failures = [google_compute_instance.trainer]
}

run "a_hand_edited_placement_is_refused" {
  command = plan
  variables { placement = { zone = "us-central1", machine_type = "n1-standard-4", gpu_type = "nvidia-tesla-t4", gpu_count = 1, spot = false } }
  expect_failures = [var.placement]
}

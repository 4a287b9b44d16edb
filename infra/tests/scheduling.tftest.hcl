# `terraform test`: the spot switch, the maximum run duration, several nodes, force_destroy.

mock_provider "google" {}

variables {
  project_id          = "test-project-123"
  ssh_source_ranges   = ["198.51.100.0/24"]
  ssh_public_key_path = "tests/fixtures/id_test.pub"
}

run "spot_switches_provisioning_and_restart" {
  command = plan
  variables { spot = true }

  assert {
    condition     = google_compute_instance.trainer[0].scheduling[0].provisioning_model == "SPOT" && google_compute_instance.trainer[0].scheduling[0].preemptible == true
    error_message = "spot = true makes a SPOT, preemptible VM"
  }
  assert {
    condition     = google_compute_instance.trainer[0].scheduling[0].automatic_restart == false
    error_message = "a spot VM never restarts on its own"
  }
  assert {
    condition     = google_compute_instance.trainer[0].scheduling[0].instance_termination_action == "STOP"
    error_message = "a spot VM is stopped when preempted by default"
  }
  assert {
    condition     = google_compute_instance.trainer[0].scheduling[0].on_host_maintenance == "TERMINATE"
    error_message = "TERMINATE stays forced with spot"
  }
}

run "spot_can_delete_on_preemption" {
  command = plan
  variables {
    spot                   = true
    termination_action     = "DELETE"
    max_run_duration_hours = 0
  }

  assert {
    condition     = google_compute_instance.trainer[0].scheduling[0].instance_termination_action == "DELETE"
    error_message = "termination_action reaches the VM"
  }
  assert {
    condition     = length(google_compute_instance.trainer[0].scheduling[0].max_run_duration) == 0
    error_message = "max_run_duration_hours = 0 sets no limit"
  }
}

run "standard_vm_without_limit" {
  command = plan
  variables { max_run_duration_hours = 0 }

  assert {
    condition     = google_compute_instance.trainer[0].scheduling[0].provisioning_model == "STANDARD" && google_compute_instance.trainer[0].scheduling[0].preemptible == false
    error_message = "spot = false keeps standard provisioning"
  }
  assert {
    condition     = length(google_compute_instance.trainer[0].scheduling[0].max_run_duration) == 0
    error_message = "no maximum run duration"
  }
}

run "max_run_duration_in_seconds" {
  command = plan
  variables { max_run_duration_hours = 1.5 }

  assert {
    condition     = google_compute_instance.trainer[0].scheduling[0].max_run_duration[0].seconds == 5400
    error_message = "1.5 h is 5400 s"
  }
}

run "two_nodes_two_gpus_each" {
  command = plan
  variables {
    node_count = 2
    gpu_count  = 2
  }

  assert {
    condition     = length(google_compute_instance.trainer) == 2 && length(google_compute_disk.data) == 2
    error_message = "one VM and one data disk per node"
  }
  assert {
    condition     = google_compute_instance.trainer[1].name == "tweet-trainer-1" && google_compute_disk.data[1].name == "tweet-trainer-data-1"
    error_message = "nodes are numbered"
  }
  assert {
    condition     = google_compute_instance.trainer[1].guest_accelerator[0].count == 2
    error_message = "gpu_count applies to every node"
  }
  assert {
    condition     = length(google_compute_firewall.internal) == 1
    error_message = "the nodes may talk to each other"
  }
}

run "force_destroy_is_opt_in" {
  command = plan
  variables { force_destroy = true }

  assert {
    condition     = google_storage_bucket.artifacts.force_destroy == true
    error_message = "force_destroy reaches the bucket"
  }
}

# Data, checkpoints and artifacts. Private (uniform bucket-level access, public access prevention
# enforced), versioned, with old checkpoints and old object versions cleaned up by lifecycle rules.
# `make infra-down` keeps it (with the trained models) unless force_destroy = true.
resource "google_storage_bucket" "artifacts" {
  project       = var.project_id
  name          = local.bucket_name
  location      = local.bucket_location
  storage_class = "STANDARD"
  force_destroy = var.force_destroy
  labels        = local.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  # Checkpoints are synced under checkpoints/<run>/: deleted once they are this old.
  lifecycle_rule {
    condition {
      age            = var.checkpoint_retention_days
      matches_prefix = ["checkpoints/"]
    }
    action {
      type = "Delete"
    }
  }

  # Overwritten or deleted objects stay recoverable for a while, then go.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

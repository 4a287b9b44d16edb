# A dedicated identity for the VM: it may read and write objects in the trainer's bucket, read objects
# in the buckets of data_read_buckets and write logs, nothing else (never the default compute account
# with the cloud-platform scope).
resource "google_service_account" "trainer" {
  project      = var.project_id
  account_id   = "${var.instance_name}-vm"
  display_name = "Trainer VM (${var.instance_name})"
  description  = "Runs the trainer container: objects in gs://${local.bucket_name} and log writing only."

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "trainer_objects" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.trainer.email}"
}

resource "google_project_iam_member" "trainer_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.trainer.email}"
}

# Read-only access to the data buckets the user names (DATA=gs://other-bucket/...): objects.get and
# objects.list only (roles/storage.objectViewer; no buckets.get, so the trainer must not call
# get_bucket()/exists() on them). The VM's own bucket already has objectAdmin and is left out.
resource "google_storage_bucket_iam_member" "data_read" {
  for_each = setsubtract(toset(var.data_read_buckets), [local.bucket_name])

  bucket = each.value
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.trainer.email}"
}

# A dedicated identity for the VM: it may read and write objects in the trainer's bucket and write
# logs, nothing else (never the default compute account with the cloud-platform scope).
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

# Terraform and provider versions. The state lives in a local file (infra/terraform.tfstate) by
# default; with infra/backend.hcl present, `make infra-init` adds backend_override.tf (backend "gcs")
# and passes the file as -backend-config, so the state moves to a GCS bucket of the user's choosing.
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 7.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = local.region
  zone    = local.zone
}

# The APIs the module uses. Never disabled on destroy: other things in the project may need them.
resource "google_project_service" "apis" {
  for_each = local.apis

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

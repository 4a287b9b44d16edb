"""A stand-in for Terraform's hashicorp/google provider 6.50.0, for the tests only.

The real provider cannot be downloaded here. This one is a Python plugin (the PyPI package `tf`,
plugin protocol 6) that tests/standins/tf_harness.py installs into a filesystem mirror under the real
provider's address, so real Terraform runs `init`, `validate`, `plan`, `apply`, `output`, `destroy` and
`terraform test` over infra/ offline. Parts:

- schema.py: the schema, generated from the provider's cdktf bindings (hashicorp/google 6.50.0's own
  schema, as cdktf-cdktf-provider-google 16.12.1 ships it) for every resource and data source type the
  module declares: attribute types (string, number, bool, list/set/map, objects), required, optional
  and computed, nested blocks with their nesting (list, set, single) and the min/max items that
  follow from "required" and "at most one".
- provider.py: the plugin process: plan with computed values unknown, apply that fills them in as
  GCP would, refresh from the stand-in cloud.
- values.py: GCP's formats for ids, self links, emails, addresses; which argument changes replace.
- cloud.py: the stand-in cloud file: what exists, what the test wants GCP to answer (an instance's
  external address, a zonal stock-out, a quota error, a non-empty bucket), and drift (a VM terminated
  by a preemption).

What Terraform checks with it exactly as with the real provider: argument and block names, types and
type conversions, required arguments, the number of blocks, references to resources and their
attributes (set vs list indexing included), expressions, `count`/`for_each`, variable validations,
preconditions, outputs and their types, and the plan's shape (what is known before apply).

What it cannot know, so no test here catches a mistake in it:
- the provider's own validation of values: enum values (e.g. `provisioning_model`), ConflictsWith,
  ExactlyOneOf, AtLeastOneOf, RequiredWith, value formats; these errors appear only on a real
  `terraform plan`;
- ForceNew for arguments whose description does not say so (it replaces on changes of name, project,
  zone, region, location and a few identity arguments, and of arguments described "forces a new
  resource"), plan-time CustomizeDiff logic and DiffSuppress rules (other than the labels it computes);
- the server side: API errors it is not told to make (the cloud file's rules), IAM permissions and
  whether the caller may create anything, quotas, stock-outs, default values chosen by GCP (machine
  images, default service accounts, disk sizes), eventual consistency and operation timeouts;
- a maximum number of blocks other than one, and MinItems on optional blocks (the bindings do not
  carry them).
"""

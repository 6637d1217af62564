"""Registers the infra test fixtures (defined in infra_support, which the tests also import by that unique name)."""

from infra_support import checkov_cmd, contract, hcl_example, hcl_modules, terraform  # noqa: F401

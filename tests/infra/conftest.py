"""Registers the infra test fixtures (defined in infra_support and prometheus_support, which the tests also import
by those unique names)."""

from infra_support import checkov_cmd, contract, hcl_example, hcl_modules, terraform  # noqa: F401
from prometheus_support import live_prometheus  # noqa: F401

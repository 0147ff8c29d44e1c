"""Delivery adapters, one module per node kind, looked up by kind in ADAPTERS (imported lazily).

A new one is added by copying a sibling module.
"""

from django.utils.module_loading import import_string

from distribution.adapters.base import Adapter, AdapterError, Bundle, TargetGone

ADAPTERS = {
    "haproxy": "distribution.adapters.haproxy.HAProxyAdapter",
    "nginx": "distribution.adapters.nginx.NginxAdapter",
    "mariadb": "distribution.adapters.mariadb.MariaDBAdapter",
}


def adapter_for(node) -> Adapter:
    return import_string(ADAPTERS[node.kind])(node)


__all__ = ["ADAPTERS", "Adapter", "AdapterError", "Bundle", "TargetGone", "adapter_for"]

"""Deliver to an nginx CDN edge: one site and one certificate pair per endpoint, one reload per batch.

The node's config holds {"workdir": ...}, the directory of an nginx started by `run_node nginx`
(or a test) through distribution.nodes.nginx. Files are named by the endpoint's id.
"""

from pathlib import Path

from certificates.models import CertificateVersion
from distribution.adapters.base import Adapter, AdapterError, Bundle, TargetGone
from distribution.cdn import origin_parts
from distribution.files import write_atomic
from distribution.models import CdnEndpoint, Deployment
from distribution.nodes.nginx import NginxError, NginxNode, Site, render_default_server
from distribution.probe import tls_serial

# The site a client gets when its SNI names no endpoint: a refused handshake.
DEFAULT_SITE = "_default"


class NginxAdapter(Adapter):
    def _edge(self) -> NginxNode:
        workdir = self.node.config.get("workdir")
        if not workdir:
            raise AdapterError(f"node {self.node.name} has no workdir in its config")
        try:
            return NginxNode.attach(Path(workdir))
        except NginxError as e:
            raise AdapterError(str(e)) from None

    def _put(self, edge: NginxNode, endpoint: CdnEndpoint, version: CertificateVersion) -> None:
        """Write the endpoint's certificate pair from `version`, then its site (served after a reload)."""
        name = str(endpoint.pk)
        bundle = Bundle.of(version)
        cert_path, key_path = edge.write_certificate(name, bundle.fullchain_pem, bundle.private_key_pem)
        scheme, origin = origin_parts(endpoint.origin)
        edge.write_site(
            Site(
                name=name, ip=self.node.address, port=self.node.port,
                server_name=[endpoint.custom_domain, endpoint.endpoint], cert_path=cert_path, key_path=key_path,
                origin=origin, ttl=endpoint.ttl, origin_scheme=scheme,
            )
        )  # fmt: skip

    def apply_config(self) -> None:
        """Serve every endpoint of the node that has a custom domain and an issued certificate; drop the rest."""
        edge = self._edge()
        endpoints = (
            CdnEndpoint.objects.filter(node=self.node, certificate__current_version__isnull=False)
            .exclude(custom_domain="")
            .select_related("certificate__current_version")
        )
        try:
            served = {DEFAULT_SITE}
            write_atomic(
                edge.sites_dir / f"{DEFAULT_SITE}.conf", render_default_server(self.node.address, self.node.port)
            )
            for endpoint in endpoints:
                self._put(edge, endpoint, endpoint.certificate.current_version)
                served.add(str(endpoint.pk))
            # Sites first: nginx -t refuses a site whose certificate is gone.
            for path in edge.sites_dir.glob("*.conf"):
                if path.stem not in served:
                    edge.remove_site(path.stem)
            for path in [*edge.certs_dir.glob("*.crt"), *edge.certs_dir.glob("*.key")]:
                if path.stem not in served:
                    edge.remove_certificate(path.stem)
            edge.reload()
        except (NginxError, OSError, ValueError) as e:
            raise AdapterError(str(e)) from None

    def deploy(self, deployments: list[Deployment]) -> None:
        """Write each deployment's version for its endpoint, then reload once for the whole batch."""
        edge = self._edge()
        ids = [deployment.target_id for deployment in deployments]
        endpoints = {str(ep.pk): ep for ep in CdnEndpoint.objects.filter(node=self.node, pk__in=ids)}
        versions = CertificateVersion.objects.in_bulk([d.version_id for d in deployments])
        try:
            for deployment in deployments:
                endpoint = endpoints.get(deployment.target_id)
                if endpoint is None or endpoint.certificate_id != deployment.certificate_id:
                    continue  # deleted or detached meanwhile: its probe says so
                self._put(edge, endpoint, versions[deployment.version_id])
            edge.reload()
        except (NginxError, OSError, ValueError) as e:
            raise AdapterError(str(e)) from None

    def probe(self, deployment: Deployment) -> str:
        endpoint = CdnEndpoint.objects.filter(pk=deployment.target_id, node=self.node).first()
        if endpoint is None or endpoint.certificate_id != deployment.certificate_id or not endpoint.custom_domain:
            raise TargetGone(f"CDN endpoint {deployment.target_name} no longer uses this certificate")
        return tls_serial(self.node.address, self.node.port, endpoint.custom_domain)

    def purge(self, endpoint: CdnEndpoint, files: list[str]) -> int:
        """Drop the edge's cached copies of the endpoint's files (by its custom domain)."""
        if not endpoint.custom_domain:
            return 0  # nothing is served, so nothing is cached
        try:
            return self._edge().purge(endpoint.custom_domain, files)
        except OSError as e:
            raise AdapterError(f"the edge could not purge: {e}") from None

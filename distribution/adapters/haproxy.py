"""Load balancers on an HAProxy node: new versions through the Runtime API, reloads only for listeners.

Each load balancer's rule is one frontend bound at the load balancer's own address and entry
port; a TLS rule's bind reads a crt-list naming that load balancer's file for its certificate
(`lb-<lb>-<certificate>.pem`: leaf, chain and key). A new version is written to that file (so a
later reload keeps it) and swapped in the running worker with `set ssl cert` / `commit ssl cert`:
no reload, no dropped connection. The node's configuration is rendered whole from the database
and applied with one reload when listeners change.
"""

import json
from pathlib import Path

from certificates.models import Certificate, CertificateVersion
from distribution.adapters.base import Adapter, AdapterError, Bundle, TargetGone
from distribution.files import write_atomic
from distribution.models import Deployment, LoadBalancer
from distribution.nodes.haproxy import Frontend, HAProxyError, HAProxyNode, render_config, render_crt_list
from distribution.probe import probe_name, tls_serial

KINDS = {"https": "https", "http2": "http2", "http": "http", "tcp": "tcp"}


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    write_atomic(path, text)


class HAProxyAdapter(Adapter):
    def __init__(self, node) -> None:
        super().__init__(node)
        self._haproxy: HAProxyNode | None = None

    @property
    def haproxy(self) -> HAProxyNode:
        if self._haproxy is None:
            try:
                self._haproxy = HAProxyNode.attach(Path(self.node.config["workdir"]))
            except (HAProxyError, KeyError, OSError) as e:
                raise AdapterError(f"load balancer node {self.node.name} does not answer: {e}") from None
        return self._haproxy

    def cert_path(self, lb_id, certificate_id) -> Path:
        return self.haproxy.cert_dir / f"lb-{lb_id}-{certificate_id}.pem"

    def crt_list_path(self, lb_id, port: int) -> Path:
        return self.haproxy.cert_dir / f"lb-{lb_id}-{port}.crtlist"

    @property
    def manifest_path(self) -> Path:
        return self.haproxy.cert_dir / "versions.json"

    def _manifest(self) -> dict[str, int]:
        """Which version each crt file holds, so a reconfiguration rewrites (and decrypts) only what changed."""
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return {}

    def apply_config(self) -> None:
        frontends = []
        wanted: set[Path] = set()
        manifest = self._manifest()
        lbs = LoadBalancer.objects.filter(node=self.node).prefetch_related("forwarding_rules__certificate")
        for lb in lbs:
            for rule in lb.forwarding_rules.all():
                kind = "passthrough" if rule.tls_passthrough else KINDS[rule.entry_protocol]
                crt_list = default = None
                if kind in ("https", "http2"):
                    crt_list = self.crt_list_path(lb.pk, rule.entry_port)
                    entries = []
                    certificate = rule.certificate
                    if certificate is not None and certificate.current_version_id is not None:
                        path = self.cert_path(lb.pk, certificate.pk)
                        if manifest.get(path.name) != certificate.current_version_id or not path.exists():
                            self._write(path, CertificateVersion.objects.get(pk=certificate.current_version_id))
                            manifest[path.name] = certificate.current_version_id
                        default = path
                        wanted.add(path)
                    _write_if_changed(crt_list, render_crt_list(entries))
                    wanted.add(crt_list)
                # Passthrough forwards the client's own TLS: HAProxy adds none towards the targets.
                target_protocol = "https" if rule.target_protocol == "https" and kind != "passthrough" else "http"
                frontends.append(
                    Frontend(
                        name=f"lb{lb.pk.hex[:16]}_{rule.entry_port}", ip=lb.ip, port=rule.entry_port, kind=kind,
                        crt_list=crt_list, default_certificate=default,
                        targets=[(address, rule.target_port) for address in lb.target_addresses],
                        target_protocol=target_protocol,
                        redirect_http_to_https=lb.redirect_http_to_https and kind == "http",
                    )
                )  # fmt: skip
        config = render_config(
            frontends, runtime_socket=self.haproxy.runtime_socket,
            fallback_certificate=self.haproxy.fallback_certificate,
        )  # fmt: skip
        write_atomic(
            self.manifest_path, json.dumps({k: v for k, v in manifest.items() if k in {p.name for p in wanted}})
        )
        try:
            self.haproxy.write_config(config)
            self.haproxy.reload()
        except (HAProxyError, OSError) as e:
            raise AdapterError(f"load balancer node {self.node.name}: {e}") from None
        for stale in self.haproxy.cert_dir.glob("lb-*"):
            if stale not in wanted:
                stale.unlink(missing_ok=True)

    def _write(self, path: Path, version: CertificateVersion) -> str:
        pem = Bundle.of(version).crt_file
        write_atomic(path, pem)
        return pem

    def deploy(self, deployments: list[Deployment]) -> None:
        loaded = None
        unloaded = False
        manifest = self._manifest()
        for deployment in deployments:
            version = CertificateVersion.objects.get(pk=deployment.version_id)
            path = self.cert_path(deployment.target_id, deployment.certificate_id)
            pem = self._write(path, version)
            manifest[path.name] = version.pk
            try:
                if loaded is None:
                    loaded = self._loaded_certificates()
                if str(path) in loaded:
                    self.haproxy.runtime.set_certificate(str(path), pem, loaded=loaded)
                else:
                    unloaded = True
            except (HAProxyError, OSError) as e:
                write_atomic(self.manifest_path, json.dumps(manifest))
                raise AdapterError(f"load balancer node {self.node.name}: {e}") from None
        write_atomic(self.manifest_path, json.dumps(manifest))
        if unloaded:
            # A certificate's first version (its rules waited with empty crt-lists): the listeners
            # change, which is the one case for a reload.
            self.apply_config()

    def _loaded_certificates(self) -> set[str]:
        """The crt files in the worker's memory, after aborting a swap a dead worker left open.

        Only the holder of the node's delivery lease swaps certificates, so an open transaction is a
        leftover, never a swap in progress.
        """
        runtime = self.haproxy.runtime
        stale = runtime.open_transaction()
        if stale is not None:
            runtime.abort_certificate(stale)
        return set(runtime.show_certificates())

    def probe(self, deployment: Deployment) -> str:
        lb = LoadBalancer.objects.filter(pk=deployment.target_id).first()
        if lb is None:
            raise TargetGone("the load balancer was deleted")
        certificate = Certificate.objects.get(pk=deployment.certificate_id)
        ports = list(lb.forwarding_rules.filter(certificate=certificate).values_list("entry_port", flat=True))
        if not ports:
            raise TargetGone("no rule of the load balancer uses the certificate any more")
        sni = probe_name(certificate.dns_names)
        served = [tls_serial(lb.ip, port, sni) for port in ports]
        wrong = [serial for serial in served if serial != deployment.version.serial]
        return wrong[0] if wrong else served[0]

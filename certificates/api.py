"""`/v2/certificates`, as in DigitalOcean's API v2, with additive fields of ours."""

from django.db.models import OuterRef, Subquery
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from certhub.api_common import PageNumberLinksPagination, Unprocessable, error_body, request_team, timestamp
from certificates import services, validation
from certificates.models import Certificate, Issuance, with_current_version
from dns_zones.models import Zone
from dns_zones.services import Invalid


class CertificateSerializer(serializers.ModelSerializer):
    not_after = serializers.SerializerMethodField()
    sha1_fingerprint = serializers.SerializerMethodField()
    step = serializers.SerializerMethodField()
    attempts = serializers.SerializerMethodField()
    names_outside_zones = serializers.SerializerMethodField()
    revoked = serializers.SerializerMethodField()
    revocation_reason = serializers.SerializerMethodField()
    revoked_at = serializers.SerializerMethodField()
    revocation_error = serializers.SerializerMethodField()

    class Meta:
        model = Certificate
        fields = [
            "id", "name", "not_after", "sha1_fingerprint", "created_at", "dns_names", "state", "type",
            "key_type", "profile", "step", "attempts", "last_error", "names_outside_zones",
            "revoked", "revocation_reason", "revoked_at", "revocation_error",
        ]  # fmt: skip

    def get_not_after(self, obj: Certificate) -> str:
        version = obj.current_version
        return version.not_after.isoformat().replace("+00:00", "Z") if version else ""

    def get_sha1_fingerprint(self, obj: Certificate) -> str:
        return obj.current_version.sha1_fingerprint if obj.current_version else ""

    def get_names_outside_zones(self, obj: Certificate) -> list[str]:
        """Custom certificates may cover names hosted elsewhere: list them (an extension)."""
        if obj.type != Certificate.Type.CUSTOM:
            return []
        zones = self.context.get("zone_names")
        if zones is None:
            return services.names_outside_zones(obj)
        return validation.names_outside(obj.dns_names, zones)

    def get_revoked(self, obj: Certificate) -> bool:
        """Whether the CA has revoked the current version (an extension)."""
        return bool(obj.current_version and obj.current_version.revoked_at)

    def get_revocation_reason(self, obj: Certificate) -> str | None:
        """The RFC 5280 reason a revocation of the current version was asked for; null when none was."""
        return (obj.current_version.revocation_reason or None) if obj.current_version else None

    def get_revoked_at(self, obj: Certificate) -> str | None:
        return timestamp(obj.current_version.revoked_at) if obj.current_version else None

    def get_revocation_error(self, obj: Certificate) -> str:
        """Why the CA has not revoked it (refused, or kept failing); asking again tries again."""
        return obj.current_version.revocation_error if obj.current_version else ""

    def get_step(self, obj: Certificate) -> str | None:
        return obj.latest_step

    def get_attempts(self, obj: Certificate) -> int:
        return obj.latest_attempts or 0


def _unprocessable(error: Invalid) -> Unprocessable:
    return Unprocessable(error.errors, error_code=getattr(error, "code", None))


class CertificateRequestSerializer(serializers.Serializer):
    """The request body (documentation only: validation lives in the services)."""

    name = serializers.CharField()
    type = serializers.ChoiceField(choices=Certificate.Type.choices)
    dns_names = serializers.ListField(child=serializers.CharField())
    key_type = serializers.CharField(required=False)
    private_key = serializers.CharField(required=False, help_text="custom: PEM, never returned")
    leaf_certificate = serializers.CharField(required=False)
    certificate_chain = serializers.CharField(required=False)
    allow_untrusted = serializers.BooleanField(required=False, help_text="custom: accept a self-signed or private CA")


def certificates_of(team):
    """The team's certificates with their current version and their latest issuance's progress."""
    latest = Issuance.objects.filter(certificate=OuterRef("pk")).order_by("-started_at")
    return with_current_version(Certificate.objects.filter(team=team)).annotate(
        latest_step=Subquery(latest.values("step")[:1]),
        latest_attempts=Subquery(latest.values("attempts")[:1]),
    )


class CertificateListView(APIView):
    @extend_schema(responses=CertificateSerializer(many=True))
    def get(self, request):
        certificates = certificates_of(request_team(request))
        name = request.query_params.get("name")
        if name:
            certificates = certificates.filter(name=name)
        paginator = PageNumberLinksPagination()
        page = paginator.paginate_queryset(certificates, request, view=self)
        context = {"zone_names": set(Zone.objects.filter(team=request_team(request)).values_list("name", flat=True))}
        data = CertificateSerializer(page, many=True, context=context).data
        return paginator.get_paginated_response(data, key="certificates")

    @extend_schema(request=CertificateRequestSerializer, responses={201: CertificateSerializer})
    def post(self, request):
        if not isinstance(request.data, dict):
            raise Unprocessable({"": ["the request body must be a JSON object"]})
        try:
            certificate = services.certificate_request(team=request_team(request), data=request.data)
        except Invalid as e:
            raise _unprocessable(e) from None
        certificate = certificates_of(request_team(request)).get(pk=certificate.pk)
        return Response({"certificate": CertificateSerializer(certificate).data}, status=status.HTTP_201_CREATED)


class CertificateDetailView(APIView):
    @extend_schema(responses=CertificateSerializer)
    def get(self, request, certificate_id):
        certificate = get_object_or_404(certificates_of(request_team(request)), pk=certificate_id)
        return Response({"certificate": CertificateSerializer(certificate).data})

    @extend_schema(request=CertificateRequestSerializer, responses=CertificateSerializer)
    def patch(self, request, certificate_id):
        """Change `key_type` or `profile` (extensions); the next renewal uses them."""
        certificate = get_object_or_404(certificates_of(request_team(request)), pk=certificate_id)
        body = request.data if isinstance(request.data, dict) else {}
        unknown = sorted(set(body) - {"key_type", "profile"})
        if unknown or not body:
            raise Unprocessable({(unknown or ["key_type"])[0]: ["only key_type and profile can be changed"]})
        try:
            services.certificate_update(certificate=certificate, data=body)
        except Invalid as e:
            raise Unprocessable(e.errors) from None
        return Response({"certificate": CertificateSerializer(certificate).data})

    @extend_schema(request=CertificateRequestSerializer, responses=CertificateSerializer)
    def put(self, request, certificate_id):
        """Upload a new version of a custom certificate under the same id (an extension)."""
        certificate = get_object_or_404(Certificate, team=request_team(request), pk=certificate_id)
        if not isinstance(request.data, dict):
            raise Unprocessable({"": ["the request body must be a JSON object"]})
        try:
            services.custom_certificate_replace(certificate=certificate, data=request.data)
        except Invalid as e:
            raise _unprocessable(e) from None
        certificate = certificates_of(request_team(request)).get(pk=certificate.pk)
        return Response({"certificate": CertificateSerializer(certificate).data})

    @extend_schema(
        parameters=[OpenApiParameter("revoke", bool, description="revoke it at the CA first (an extension)")],
        responses={204: None},
    )
    def delete(self, request, certificate_id):
        """`?revoke=true` (an extension) revokes the current version (cessationOfOperation) before
        deleting, within the request: nothing is deleted unless the CA confirmed it."""
        certificate = get_object_or_404(Certificate, team=request_team(request), pk=certificate_id)
        revoke = _flag(request.query_params.get("revoke"), "revoke")
        try:
            services.certificate_delete(certificate=certificate, revoke=revoke)
        except services.InUse as e:
            return Response(error_body(403, str(e), used_by=e.uses), status=status.HTTP_403_FORBIDDEN)
        except services.CaUnavailable as e:
            retry_after = str(max(1, round(e.retry_after or CA_RETRY_AFTER)))
            return Response(error_body(503, str(e)), status=503, headers={"Retry-After": retry_after})
        return Response(status=status.HTTP_204_NO_CONTENT)


# Seconds a client is asked to wait when the CA could not be reached for a revocation.
CA_RETRY_AFTER = 30


def _flag(value: str | None, name: str) -> bool:
    if value in (None, "", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise Unprocessable({name: ["must be true or false"]})


class ActionSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["renew", "revoke"])
    reason = serializers.ChoiceField(
        choices=list(services.REVOCATION_REASONS), required=False, help_text="revoke: RFC 5280 reason (unspecified)"
    )


class CertificateActionView(APIView):
    """`POST /v2/certificates/{id}/actions` (an extension): `{"type": "renew"}` renews now;
    `{"type": "revoke", "reason": ...}` revokes the current version (see services.certificate_revoke)."""

    @extend_schema(request=ActionSerializer, responses={201: ActionSerializer})
    def post(self, request, certificate_id):
        certificate = get_object_or_404(Certificate, team=request_team(request), pk=certificate_id)
        body = request.data if isinstance(request.data, dict) else {}
        if body.get("type") == "revoke":
            return self._revoke(certificate, body)
        if body.get("type") != "renew":
            raise Unprocessable({"type": ["must be renew or revoke"]})
        try:
            issuance = services.certificate_renew_now(certificate=certificate)
        except Invalid as e:
            raise _unprocessable(e) from None
        action = {
            "id": issuance.pk, "status": "in-progress", "type": "renew",
            "started_at": issuance.started_at.isoformat().replace("+00:00", "Z"), "completed_at": None,
            "resource_id": str(certificate.pk), "resource_type": "certificate",
        }  # fmt: skip
        return Response({"action": action}, status=status.HTTP_201_CREATED)

    def _revoke(self, certificate: Certificate, body: dict) -> Response:
        unknown = sorted(set(body) - {"type", "reason"})
        if unknown:
            raise Unprocessable({unknown[0]: ["is not used by the revoke action; leave it out"]})
        try:
            version = services.certificate_revoke(certificate=certificate, reason=body.get("reason"))
        except services.InUse as e:
            return Response(error_body(403, str(e), used_by=e.uses), status=status.HTTP_403_FORBIDDEN)
        # In progress until the CA confirms (a task): the certificate then shows `revoked: true`.
        action = {
            "id": version.pk, "status": "in-progress", "type": "revoke",
            "started_at": timestamp(version.revocation_requested_at), "completed_at": None,
            "resource_id": str(certificate.pk), "resource_type": "certificate",
        }  # fmt: skip
        return Response({"action": action}, status=status.HTTP_201_CREATED)

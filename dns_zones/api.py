"""`/v2/domains` and `/v2/domains/{name}/records`, as in DigitalOcean's API v2."""

from django.db.models import Prefetch
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from certhub.api_common import PageNumberLinksPagination, Unprocessable, request_team
from certhub.names import NameError_, to_ascii
from dns_zones import services
from dns_zones.models import Record, Zone
from dns_zones.zonefile import render_zone_file


class DomainSerializer(serializers.Serializer):
    name = serializers.CharField()
    ttl = serializers.IntegerField()
    zone_file = serializers.SerializerMethodField()

    def get_zone_file(self, zone: Zone) -> str:
        return render_zone_file(zone, list(zone.records.all()))


class DomainCreateSerializer(serializers.Serializer):
    name = serializers.JSONField()
    ip_address = serializers.JSONField(required=False, allow_null=True)


class RecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = Record
        fields = ["id", "type", "name", "data", "priority", "port", "ttl", "weight", "flags", "tag"]


RECORD_INPUT_FIELDS = ("type", "name", "data", "priority", "port", "ttl", "weight", "flags", "tag")


def _team_zone(request, domain_name: str) -> Zone:
    try:
        name = to_ascii(domain_name)
    except NameError_:
        name = domain_name.lower()
    return get_object_or_404(Zone, team=request_team(request), name=name)


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise Unprocessable({"": ["the request body must be a JSON object"]})
    return request.data


def _record_input(request) -> dict:
    body = _body(request)
    unknown = sorted(set(body) - set(RECORD_INPUT_FIELDS) - {"id"})
    if unknown:
        raise Unprocessable({unknown[0]: ["is not a field of a domain record"]})
    return {k: v for k, v in body.items() if k in RECORD_INPUT_FIELDS}


def _invalid(e: services.Invalid) -> Unprocessable:
    return Unprocessable(e.errors)


class DomainListView(APIView):
    @extend_schema(responses=DomainSerializer(many=True))
    def get(self, request):
        zones = Zone.objects.filter(team=request_team(request)).prefetch_related(
            Prefetch("records", queryset=Record.objects.order_by("id"))
        )
        paginator = PageNumberLinksPagination()
        page = paginator.paginate_queryset(zones, request, view=self)
        return paginator.get_paginated_response(DomainSerializer(page, many=True).data, key="domains")

    @extend_schema(request=DomainCreateSerializer, responses={201: DomainSerializer})
    def post(self, request):
        body = _body(request)
        try:
            zone = services.zone_create(
                team=request_team(request), name=body.get("name"), ip_address=body.get("ip_address")
            )
        except services.Invalid as e:
            raise _invalid(e) from None
        return Response({"domain": DomainSerializer(zone).data}, status=status.HTTP_201_CREATED)


class DomainDetailView(APIView):
    @extend_schema(responses=DomainSerializer)
    def get(self, request, domain_name: str):
        zone = _team_zone(request, domain_name)
        return Response({"domain": DomainSerializer(zone).data})

    @extend_schema(responses={204: None})
    def delete(self, request, domain_name: str):
        services.zone_delete(zone=_team_zone(request, domain_name))
        return Response(status=status.HTTP_204_NO_CONTENT)


class RecordListView(APIView):
    @extend_schema(responses=RecordSerializer(many=True))
    def get(self, request, domain_name: str):
        zone = _team_zone(request, domain_name)
        records = zone.records.order_by("id")
        rtype = request.query_params.get("type")
        if rtype:
            if rtype.upper() not in Record.Type.values:
                raise Unprocessable({"type": [f"must be one of {', '.join(Record.Type.values)}"]})
            records = records.filter(type=rtype.upper())
        name = request.query_params.get("name")
        if name:
            # DigitalOcean filters by the fully qualified name.
            try:
                fqdn = to_ascii(name)
            except NameError_ as e:
                raise Unprocessable({"name": [str(e)]}) from None
            relative = "@" if fqdn == zone.name else fqdn.removesuffix("." + zone.name)
            records = records.filter(name=relative) if relative != fqdn else records.none()
        paginator = PageNumberLinksPagination()
        page = paginator.paginate_queryset(records, request, view=self)
        return paginator.get_paginated_response(RecordSerializer(page, many=True).data, key="domain_records")

    @extend_schema(request=RecordSerializer, responses={201: RecordSerializer})
    def post(self, request, domain_name: str):
        zone = _team_zone(request, domain_name)
        try:
            record = services.record_create(zone=zone, data=_record_input(request))
        except services.Invalid as e:
            raise _invalid(e) from None
        return Response({"domain_record": RecordSerializer(record).data}, status=status.HTTP_201_CREATED)


class RecordDetailView(APIView):
    def _record(self, request, domain_name: str, record_id: int) -> Record:
        zone = _team_zone(request, domain_name)
        return get_object_or_404(Record.objects.select_related("zone"), zone=zone, pk=record_id)

    @extend_schema(responses=RecordSerializer)
    def get(self, request, domain_name: str, record_id: int):
        return Response({"domain_record": RecordSerializer(self._record(request, domain_name, record_id)).data})

    @extend_schema(request=RecordSerializer, responses=RecordSerializer)
    def put(self, request, domain_name: str, record_id: int):
        record = self._record(request, domain_name, record_id)
        data = _record_input(request)
        if record.type != Record.Type.SOA:
            # PUT replaces: fields left out go back to their defaults.
            data = {
                "name": None,
                "data": None,
                **{f: None for f in ("priority", "port", "weight", "flags", "tag", "ttl")},
                **data,
            }
        try:
            record = services.record_update(record=record, data=data)
        except services.Invalid as e:
            raise _invalid(e) from None
        return Response({"domain_record": RecordSerializer(record).data})

    @extend_schema(request=RecordSerializer, responses=RecordSerializer)
    def patch(self, request, domain_name: str, record_id: int):
        record = self._record(request, domain_name, record_id)
        try:
            record = services.record_update(record=record, data=_record_input(request))
        except services.Invalid as e:
            raise _invalid(e) from None
        return Response({"domain_record": RecordSerializer(record).data})

    @extend_schema(responses={204: None})
    def delete(self, request, domain_name: str, record_id: int):
        try:
            services.record_delete(record=self._record(request, domain_name, record_id))
        except services.Invalid as e:
            raise _invalid(e) from None
        return Response(status=status.HTTP_204_NO_CONTENT)

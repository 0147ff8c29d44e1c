"""`/v2/databases`, as in DigitalOcean's API v2: create, list, get and destroy MySQL clusters.

As DigitalOcean does, the connection details carry the user's password on create and on get,
here only to tokens that may also change things (a read-only token sees "" instead); answers
are not to be cached. The password is stored encrypted and appears nowhere else.
"""

from urllib.parse import quote

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from certhub.api_common import error_body, json_object, request_team, timestamp
from certhub.models import ApiToken
from distribution import databases as services
from distribution.models import DatabaseCluster


def connection_dict(cluster: DatabaseCluster, *, with_password: bool = True) -> dict:
    user, password = cluster.db_user, cluster.password if with_password else ""
    port = cluster.node.port
    credentials = f"{user}:{quote(password, safe='')}" if password else user
    return {
        "uri": f"mysql://{credentials}@{cluster.host}:{port}/{cluster.db_name}?ssl-mode=REQUIRED",
        "database": cluster.db_name,
        "host": cluster.host,
        "port": port,
        "user": user,
        "password": password,
        "ssl": True,
    }


def database_dict(cluster: DatabaseCluster, *, with_password: bool = True) -> dict:
    connection = connection_dict(cluster, with_password=with_password)
    return {
        "id": str(cluster.pk),
        "name": cluster.name,
        "engine": cluster.engine,
        "version": cluster.version,
        "num_nodes": cluster.num_nodes,
        "size": cluster.size,
        "region": cluster.region,
        "status": cluster.status,
        "created_at": timestamp(cluster.created_at),
        "tags": cluster.tags,
        "db_names": [cluster.db_name],
        "connection": connection,
        # One network here: the private connection is the public one.
        "private_connection": dict(connection),
        "users": [{"name": cluster.db_user, "role": "primary", "password": connection["password"]}],
        "maintenance_window": None,
        "project_id": "",
    }


def may_see_passwords(request) -> bool:
    """Credentials go to tokens that may change things; a read-only token (a dashboard, say) gets none."""
    return ApiToken.Scope.WRITE in request.auth.scopes


def no_store(response: Response) -> Response:
    response["Cache-Control"] = "no-store"
    return response


DATABASE_SCHEMA = inline_serializer(
    "DatabaseEnvelope", {"database": serializers.DictField(help_text="DigitalOcean's database cluster object")}
)


def _unavailable(error: services.NodeUnavailable) -> Response:
    return Response(error_body(503, str(error)), status=status.HTTP_503_SERVICE_UNAVAILABLE)


class DatabaseListView(APIView):
    @extend_schema(
        operation_id="databases_list_clusters",
        parameters=[OpenApiParameter("tag_name", str, description="only clusters with this tag")],
        responses=inline_serializer("DatabaseList", {"databases": serializers.ListField()}),
    )
    def get(self, request):
        clusters = services.clusters_of(request_team(request), tag=request.query_params.get("tag_name"))
        shown = may_see_passwords(request)
        return no_store(Response({"databases": [database_dict(cluster, with_password=shown) for cluster in clusters]}))

    @extend_schema(operation_id="databases_create_cluster", request=DATABASE_SCHEMA, responses={201: DATABASE_SCHEMA})
    def post(self, request):
        team = request_team(request)
        try:
            cluster, _ = services.cluster_create(team=team, data=json_object(request))
        except services.NodeUnavailable as e:
            return _unavailable(e)
        return no_store(Response({"database": database_dict(cluster)}, status=status.HTTP_201_CREATED))


class DatabaseDetailView(APIView):
    @extend_schema(operation_id="databases_get_cluster", responses=DATABASE_SCHEMA)
    def get(self, request, cluster_id):
        cluster = get_object_or_404(services.clusters_of(request_team(request)), pk=cluster_id)
        return no_store(Response({"database": database_dict(cluster, with_password=may_see_passwords(request))}))

    @extend_schema(operation_id="databases_destroy_cluster", responses={204: None})
    def delete(self, request, cluster_id):
        clusters = DatabaseCluster.objects.filter(team=request_team(request)).select_related("node")
        cluster = get_object_or_404(clusters, pk=cluster_id)
        try:
            services.cluster_delete(cluster=cluster)
        except services.NodeUnavailable as e:
            return _unavailable(e)
        return Response(status=status.HTTP_204_NO_CONTENT)

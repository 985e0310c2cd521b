"""Django app for tests/frameworks, settings configured in-module (no project layout).

``application`` is Django's ASGI handler, ``wsgi_application`` its WSGI handler,
for ``--interface wsgi``.
"""

from __future__ import annotations

import json
import os
import time

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="zasgi-tests-only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
    DATABASES={},
    USE_TZ=True,
)
django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402  (needs settings first)
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import (  # noqa: E402
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import path  # noqa: E402


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"hello django {request.GET.get('name', 'world')}", content_type="text/plain")


def info(request: HttpRequest, number: int) -> JsonResponse:
    return JsonResponse(
        {
            "number": number,
            "method": request.method,
            "path": request.path,
            "query": request.GET.dict(),
            "header": request.headers.get("X-Probe"),
            "pid": os.getpid(),
        }
    )


def submit(request: HttpRequest) -> JsonResponse | HttpResponseNotAllowed:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if request.content_type == "application/json":
        return JsonResponse({"json": json.loads(request.body)})
    return JsonResponse({"form": request.POST.dict()})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks():  # type: ignore[no-untyped-def]
        for i in range(3):
            time.sleep(0.01)
            yield f"chunk {i}\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


urlpatterns = [
    path("", hello),
    path("info/<int:number>/", info),
    path("submit/", submit),
    path("stream/", stream),
]

application = get_asgi_application()
wsgi_application = get_wsgi_application()

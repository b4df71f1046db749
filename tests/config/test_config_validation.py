"""Semantic (Istio-rule) and structural validation per kind, through ``validate`` on built Configs, and the
unhonoured-field warnings."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mizzen.config.errors import Severity
from mizzen.config.model import Config, Source
from mizzen.config.validation import validate
from mizzen.config.validation.unhonoured import MESSAGE, UNHONOURED, present_paths

API = {"Service": "v1", "Deployment": "apps/v1", "Namespace": "v1"}


def cfg(kind: str, spec: str | dict[str, Any], name: str = "obj", namespace: str = "default") -> Config:
    body = yaml.safe_load(spec) if isinstance(spec, str) else spec
    return Config(kind=kind, api_version=API.get(kind, "networking.istio.io/v1"), name=name,
                  namespace=namespace, spec=body or {}, source=Source("t.yaml", 1))


def problems(kind: str, spec: str | dict[str, Any], name: str = "obj") -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in validate(cfg(kind, spec, name)) if i.severity is Severity.ERROR]


def warnings(kind: str, spec: str | dict[str, Any]) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in validate(cfg(kind, spec)) if i.severity is Severity.WARNING]


ROUTE = "route: [{destination: {host: reviews}}]"

INVALID: list[tuple[str, str, str, str]] = [
    # VirtualService
    ("VirtualService", f"hosts: [a]\nhttp: [{{{ROUTE}, timeout: 0.5ms}}]", "spec.http[0].timeout",
     'Invalid value: "0.5ms": must be a valid duration greater than 1ms'),
    ("VirtualService", f"hosts: [a]\nhttp: [{{{ROUTE}, timeout: 1.0005s}}]", "spec.http[0].timeout",
     "only durations to ms precision are supported"),
    ("VirtualService", "hosts: [a]", "spec", "http, tcp or tls must be provided in virtual service"),
    ("VirtualService", "hosts: [a]\nhttp: [{match: [{uri: {prefix: /}}]}]", "spec.http[0]",
     "HTTP route, redirect or direct_response is required"),
    ("VirtualService", f"hosts: [a]\nhttp: [{{{ROUTE}, directResponse: {{status: 503}}}}]",
     "spec.http[0].directResponse", "HTTP route cannot contain both route and direct_response"),
    ("VirtualService", "hosts: [a]\nhttp: [{directResponse: {status: 700}}]",
     "spec.http[0].directResponse.status",
     "HTTP status 700 is not in range 200-599"),
    ("VirtualService", "hosts: [a, a]\nhttp: [{" + ROUTE + "}]", "spec.hosts[1]",
     "duplicate hosts in virtual service: a & a"),
    ("VirtualService", "hosts: ['*.example.com', 'a.example.com']\nhttp: [{" + ROUTE + "}]", "spec.hosts[1]",
     "duplicate hosts in virtual service: *.example.com & a.example.com"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: '*'}}]}]",
     "spec.http[0].route[0].destination.host", "invalid destination host *"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a, subset: V_1}}]}]",
     "spec.http[0].route[0].destination.subset", "subset name is invalid: V_1"),
    ("VirtualService", f"hosts: [a]\nhttp: [{{{ROUTE}, retries: {{attempts: -1}}}}]",
     "spec.http[0].retries.attempts", "attempts cannot be negative"),
    ("VirtualService", f"hosts: [a]\nhttp: [{{{ROUTE}, retries: {{perTryTimeout: 2s}}}}]",
     "spec.http[0].retries.attempts", "http retry policy configured when attempts are set to 0 (disabled)"),
    ("VirtualService", f"hosts: [a]\nhttp: [{{{ROUTE}, retries: {{attempts: 2, retryOn: '5xx,bogus'}}}}]",
     "spec.http[0].retries.retryOn", '"bogus" is not a valid retryOn policy'),
    ("VirtualService", f"hosts: [a]\nhttp: [{{{ROUTE}, fault: {{abort: {{httpStatus: 100, percentage: "
     "{value: 10}}}}]", "spec.http[0].fault.abort.httpStatus", "HTTP status 100 is not in range 200-599"),
    ("VirtualService", f"hosts: [a]\nhttp: [{{{ROUTE}, fault: {{delay: {{fixedDelay: 1s, percentage: "
     "{value: 101}}}}]", "spec.http[0].fault.delay.percentage.value",
     "percentage 101 is neither 0.0, nor in range [0.0001, 100.0]"),
    ("VirtualService", f"hosts: [a]\nhttp: [{{{ROUTE}, fault: {{}}}}]", "spec.http[0].fault",
     "HTTP fault injection must have an abort and/or a delay"),
    ("VirtualService", "hosts: [a]\nhttp: [{redirect: {redirectCode: 200}}]", "spec.http[0].redirect",
     "redirect must specify URI, authority, scheme, or port"),
    ("VirtualService", "hosts: [a]\nhttp: [{redirect: {uri: /x, scheme: ftp}}]",
     "spec.http[0].redirect.scheme",
     'invalid redirect scheme, must be "http" or "https"'),
    ("VirtualService", f"hosts: [a]\nhttp: [{{{ROUTE}, rewrite: {{}}}}]", "spec.http[0].rewrite",
     "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or "
     "UriRegexRewrite may be specified"),
    ("VirtualService", "hosts: [a]\nhttp: "
                       f"[{{{ROUTE}, rewrite: {{uriRegexRewrite: {{match: '(', rewrite: x}}}}}}]",
     "spec.http[0].rewrite.uriRegexRewrite.match", "invalid RE2 regex: missing ): (; Istio uses RE2 style "
     "regex-based match (https://github.com/google/re2/wiki/Syntax)"),
    ("VirtualService", "hosts: [a]\nhttp: "
                       f"[{{{ROUTE}, match: [{{headers: {{'bad header': {{exact: x}}}}}}]}}]",
     'spec.http[0].match[0].headers["bad header"]', "header name bad header is not a valid header name"),
    ("VirtualService", f"hosts: [a]\nhttp: [{{{ROUTE}, headers: {{request: {{set: {{':path': /x}}}}}}}}]",
     'spec.http[0].headers.request.set[":path"]', 'invalid header ":path": header cannot have ":" prefix'),
    ("VirtualService", f"hosts: [a]\nhttp: [{{{ROUTE}, headers: {{response: {{remove: [Host]}}}}}}]",
     "spec.http[0].headers.response.remove[0]", 'invalid header "Host": cannot set Host header'),
    ("VirtualService", f"hosts: [a]\nhttp: [{{{ROUTE}, corsPolicy: {{allowMethods: [FETCH]}}}}]",
     "spec.http[0].corsPolicy.allowMethods[0]", '"FETCH" is not a supported HTTP method'),
    ("VirtualService", f"hosts: [a]\nhttp: [{{{ROUTE}, corsPolicy: {{maxAge: 1500ms}}}}]",
     "spec.http[0].corsPolicy.maxAge", "max_age duration is accurate only to seconds precision"),
    ("VirtualService", "hosts: [a]\nhttp: "
                       f"[{{{ROUTE}, mirror: {{host: b}}, mirrorPercentage: {{value: 120}}}}]",
     "spec.http[0].mirrorPercentage.value", "mirror_percentage must be 0..100"),
    ("VirtualService", "hosts: [a]\ngateways: [bad_gw]\nhttp: [{" + ROUTE + "}]", "spec.gateways[0]",
     'domain name "bad_gw" invalid (label "bad_gw" invalid)'),
    ("VirtualService", "hosts: [a]\ngateways: [ns/]\nhttp: [{" + ROUTE + "}]", "spec.gateways[0]",
     "config namespace and gateway name cannot be empty"),
    ("VirtualService", "gateways: [gw]\nhttp: [{" + ROUTE + "}]", "spec.gateways",
     "delegate virtual service must have no gateways specified"),
    ("VirtualService", "http: [{delegate: {name: x}}]", "spec.http[0].delegate",
     "delegate HTTP route cannot contain delegate"),
    ("VirtualService", "hosts: [a]\nhttp: [{delegate: {name: x}, route: [{destination: {host: a}}]}]",
     "spec.http[0].route", "root HTTP route  must not specify route"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], mirror: {host: m}, "
     "mirrors: [{destination: {host: n}}]}]", "spec.http[0].mirrors",
     "HTTP route cannot contain both mirror and mirrors"),
    ("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], "
     "match: [{method: {prefix: ''}}]}]",
     "spec.http[0].match[0].method.prefix", "prefix string match should not be empty"),
    ("VirtualService", "hosts: [a.com]\ntls: [{match: [{port: 443}], route: [{destination: {host: a}}]}]",
     "spec.tls[0].match[0].sniHosts", "Required value"),
    ("VirtualService", "hosts: [a.com]\ntls: [{match: [{sniHosts: []}], route: [{destination: {host: a}}]}]",
     "spec.tls[0].match[0]", "TLS match must have at least one SNI host"),
    ("VirtualService", "hosts: [a.com]\ntls: "
                       "[{match: [{sniHosts: [b.com]}], route: [{destination: {host: a}}]}]",
     "spec.tls[0].match[0].sniHosts[0]",
     'SNI host "b.com" is not a compatible subset of any of the virtual service hosts: [a.com]'),
    ("VirtualService", "hosts: [a]\ntcp: [{match: [{port: 31400}]}]", "spec.tcp[0]", "TCP route is required"),
    ("VirtualService", "hosts: [a]\ntcp: [{match: [{destinationSubnets: [10.0.0.0/99]}], "
     "route: [{destination: {host: a}}]}]", "spec.tcp[0].match[0].destinationSubnets[0]",
     "10.0.0.0/99 is not a valid CIDR block"),
    ("VirtualService", "hosts: [a]\nhttp: [{match: [{headers: {'@request.auth.claims.group': {exact: x}}}], "
     "route: [{destination: {host: a}}]}]", 'spec.http[0].match[0].headers["@request.auth.claims.group"]',
     "JWT claim based routing (key: @request.auth.claims.group) is only supported for gateway, found no "
     "gateways: []"),
    ("VirtualService", "hosts: [a]\nexportTo: ['*', '.']\nhttp: [{" + ROUTE + "}]", "spec.exportTo",
     "cannot have both public (*) and non-public exportTo values for a resource"),
    # DestinationRule
    ("DestinationRule", "host: 'bad host'", "spec.host", 'domain name "bad host" invalid (label "bad host" '
                                                         'invalid)'),
    ("DestinationRule", "host: a\ntrafficPolicy: {}", "spec.trafficPolicy", "traffic policy must have at "
                                                                            "least one "
     "field"),
    ("DestinationRule", "host: a\ntrafficPolicy: {loadBalancer: {simple: ROUND_ROBIN, consistentHash: "
     "{useSourceIp: true}}}", "spec.trafficPolicy.loadBalancer",
     "only one of simple, consistentHash, backendUtilization may be set (got simple, consistentHash)"),
    ("DestinationRule", "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, "
     "httpHeaderName: x}}}", "spec.trafficPolicy.loadBalancer.consistentHash",
     "only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName may be set "
     "(got httpHeaderName, useSourceIp)"),
    ("DestinationRule", "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {ttl: 0s}}}}",
     "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name", "Required value"),
    ("DestinationRule", "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: ''}}}}",
     "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name", "name required for HttpCookie"),
    ("DestinationRule", "host: a\ntrafficPolicy: "
                        "{loadBalancer: {consistentHash: {maglev: {tableSize: 1000}}}}",
     "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "tableSize must be a prime number "
                                                                        "for "
     "maglev"),
    ("DestinationRule", "host: a\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}",
     "spec.trafficPolicy.connectionPool.tcp.maxConnections", "max connections must be non-negative"),
    ("DestinationRule", "host: a\ntrafficPolicy: {connectionPool: {}}", "spec.trafficPolicy.connectionPool",
     "connection pool must have at least one field"),
    ("DestinationRule", "host: a\ntrafficPolicy: {connectionPool: {tcp: {connectTimeout: 5}}}",
     "spec.trafficPolicy.connectionPool.tcp.connectTimeout", "Invalid value: 5: must be of type string, got "
     "integer"),
    ("DestinationRule", "host: a\ntrafficPolicy: {outlierDetection: {maxEjectionPercent: 150}}",
     "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "percentage 150 is not in range 0..100"),
    ("DestinationRule", "host: a\ntrafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 3}}",
     "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
     "outlier detection consecutive local origin failures is specified, but split external local origin "
     "errors "
     "is set to false"),
    ("DestinationRule", "host: a\ntrafficPolicy: {portLevelSettings: [{port: {number: 80}}]}",
     "spec.trafficPolicy.portLevelSettings[0]", "port traffic policy must have at least one field"),
    ("DestinationRule", "host: a\ntrafficPolicy: {portLevelSettings: [{port: {number: 0}, loadBalancer: "
     "{simple: RANDOM}}]}", "spec.trafficPolicy.portLevelSettings[0].port.number",
     "port number 0 must be in the range 1..65535"),
    ("DestinationRule", "host: a\ntrafficPolicy: {tls: {mode: MUTUAL}}",
     "spec.trafficPolicy.tls.clientCertificate",
     "client certificate required for mutual tls"),
    ("DestinationRule", "host: a\ntrafficPolicy: {tls: {mode: STRICT}}", "spec.trafficPolicy.tls.mode",
     'Unsupported value: "STRICT": supported values: "DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"'),
    ("DestinationRule", "host: a\nsubsets: [{name: v1, labels: {'bad key!': x}}]",
     'spec.subsets[0].labels["bad key!"]', "invalid label key 'bad key!'"),
    ("DestinationRule", "host: a\nsubsets: [{labels: {v: x}}]", "spec.subsets[0].name", "Required value"),
    ("DestinationRule", "host: a\nworkloadSelector: {matchLabels: {app: '*'}}",
     "spec.workloadSelector.matchLabels.app",
     'Invalid value: "*": wildcard not allowed in label value match'),
    # Gateway
    ("Gateway", "servers: []", "spec.servers", "gateway must have at least one server"),
    ("Gateway", "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: []}]",
     "spec.servers[0].hosts", "server config must contain at least one host"),
    ("Gateway", "servers: [{port: {number: 80, name: http, protocol: FTP}, hosts: ['*']}]",
     "spec.servers[0].port.protocol", 'invalid protocol "FTP", supported protocols are HTTP, HTTP2, GRPC, '
     "GRPC-WEB, MONGO, REDIS, MYSQL, TCP, HTTPS, TLS"),
    ("Gateway", "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*']}]",
     "spec.servers[0].port", "server must have TLS settings for HTTPS/TLS protocols"),
    ("Gateway", "servers: "
                "[{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], tls: {mode: SIMPLE, "
     "credentialName: c}}]", "spec.servers[0].tls", "server cannot have TLS settings for plain text HTTP "
                                                    "ports"),
    ("Gateway", "servers: [{port: {number: 80, name: a, protocol: HTTP}, hosts: ['*']}, "
     "{port: {number: 81, name: a, protocol: HTTP}, hosts: ['*']}]", "spec.servers[1].port.name",
     "port names in servers must be unique: duplicate name a"),
    ("Gateway", "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['ns/bad_host']}]",
     "spec.servers[0].hosts[0]", 'domain name "bad_host" invalid (label "bad_host" invalid)'),
    ("Gateway", "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: "
     "ISTIO_MUTUAL, credentialName: c}}]", "spec.servers[0].tls.credentialName",
     "ISTIO_MUTUAL TLS cannot have associated credentialName"),
    ("Gateway", "servers: "
                "[{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: MUTUAL, "
     "serverCertificate: a, privateKey: b}}]", "spec.servers[0].tls",
     "MUTUAL TLS requires a client CA bundle"),
    # ServiceEntry
    ("ServiceEntry", "hosts: [a.com]\nresolution: STATIC\nendpoints: [{address: foo.com}]",
     "spec.endpoints[0].address", 'endpoint address "foo.com" is not a valid IP address'),
    ("ServiceEntry", "hosts: [a.com]\nresolution: DNS\nports: [{number: 80, name: http}]\n"
     "endpoints: [{address: b.com, ports: {grpc: 81}}]", "spec.endpoints[0].ports.grpc",
     "endpoint port 81 is not defined by the service entry"),
    ("ServiceEntry", "hosts: ['*.a.com']\nresolution: DNS", "spec.hosts[0]",
     "hosts must be FQDN if no endpoints are provided for resolution mode DNS"),
    ("ServiceEntry", "hosts: [a.com, b.com]\nresolution: DNS\nports: "
                     "[{number: 3306, name: tcp, protocol: TCP}]",
     "spec.ports[0]", "multiple hosts provided with non-HTTP, non-TLS ports"),
    ("ServiceEntry", "hosts: [a.com]\nports: [{number: 80, name: http, protocol: FOO}]",
     "spec.ports[0].protocol",
     "unsupported protocol: FOO"),
    ("ServiceEntry", "hosts: [a.com]\naddresses: [300.1.1.1]", "spec.addresses[0]", "300.1.1.1 is not a "
                                                                                    "valid IP"),
    # WorkloadEntry
    ("WorkloadEntry", "address: unix://relative/path", "spec.address",
     "Invalid value: \"unix://relative/path\": UDS must be an absolute path or abstract socket"),
    ("WorkloadEntry", "address: 'not a host'", "spec.address",
     'endpoint address "not a host" is not a valid FQDN or an IP address'),
    ("WorkloadEntry", "address: 1.2.3.4\nports: {http: 0}", "spec.ports.http",
     "Invalid value: 0: port must be between 1-65535"),
    ("WorkloadEntry", "labels: {app: x}", "spec", "Invalid value: Address is required"),
    # Sidecar
    ("Sidecar", "workloadSelector: {labels: {app: x}}", "spec", "sidecar: empty configuration provided"),
    ("Sidecar",
     "egress: [{hosts: ['./*']}, {port: {number: 80, name: http, protocol: HTTP}, hosts: ['./*']}]",
     "spec.egress[0]",
     "sidecar: the egress listener with empty port should be the last listener in the list"),
    ("Sidecar", "egress: [{port: {number: 80, protocol: HTTP, name: a}, hosts: ['./*']}, "
     "{port: {number: 80, protocol: HTTP, name: b}, hosts: ['./*']}]", "spec.egress[1].port",
     "sidecar: ports on IP bound listeners must be unique"),
    ("Sidecar", "egress: [{hosts: ['bad_ns/*']}]", "spec.egress[0].hosts[0]",
     'invalid namespace value "bad_ns" in sidecar'),
    ("Sidecar", "ingress: "
                "[{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: '10.0.0.1:8080'}]",
     "spec.ingress[0].defaultEndpoint", "sidecar: defaultEndpoint must be of form "
                                        "127.0.0.1:<port>,0.0.0.0:<port>,"
     "[::1]:port,[::]:port,unix://filepath or unset"),
    ("Sidecar", "egress: [{hosts: ['./*']}]\noutboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: "
     "{host: proxy.com, port: {number: 3128}}}", "spec.outboundTrafficPolicy.egressProxy",
     "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode"),
    # Kubernetes
    ("Service", "ports: [{port: 0}]", "spec.ports[0].port", "Invalid value: 0: must be between 1 and 65535, "
     "inclusive"),
    ("Service", "ports: [{port: 80, protocol: HTTP}]", "spec.ports[0].protocol",
     'Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"'),
    ("Service", "ports: [{port: 80, targetPort: http_port}]", "spec.ports[0].targetPort",
     'Invalid value: "http_port": must be a port number or an IANA service name (at most 15 lowercase '
     'letters, '
     "digits and '-', with at least one letter)"),
    ("Service", "ports: [{port: 80, name: a}, {port: 81, name: a}]", "spec.ports[1].name", 'Duplicate '
                                                                                           'value: "a"'),
    ("Service", "ports: [{port: 80, appProtocol: 'h2 c'}]", "spec.ports[0].appProtocol",
     'Invalid value: "h2 c": must be a valid protocol name such as "http", "grpc" or "kubernetes.io/h2c"'),
    ("Service", "selector: {app: x}", "spec.ports", "Required value"),
    ("Service", "ports: [{port: 80}]\ntype: Magic", "spec.type",
     'Unsupported value: "Magic": supported values: ClusterIP, NodePort, LoadBalancer, ExternalName'),
    ("Deployment", "selector: {matchLabels: {app: a}}\ntemplate: {metadata: {labels: {app: a}}, spec: "
     "{containers: []}}", "spec.template.spec.containers", "Required value"),
    ("Deployment", "selector: {matchLabels: {app: a}}\ntemplate: {metadata: {labels: {app: a}}, spec: "
     "{containers: [{name: c, image: i, ports: [{containerPort: 99999}]}]}}",
     "spec.template.spec.containers[0].ports[0].containerPort", "Invalid value: 99999: must be between 1 and "
     "65535, inclusive"),
    ("Deployment", "selector: {matchLabels: {app: a}}\ntemplate: {metadata: {labels: {app: a}}, spec: "
     "{containers: [{image: i}]}}", "spec.template.spec.containers[0].name", "Required value"),
    ("Deployment", "template: {metadata: {labels: {app: a}}, spec: {containers: [{name: c, image: i}]}}",
     "spec.selector", "Required value"),
]


@pytest.mark.parametrize(("kind", "spec", "path", "message"), INVALID,
                         ids=[f"{k}:{p}:{m[:40]}" for k, _, p, m in INVALID])
def test_config_invalid_spec_is_reported_at_its_field(kind: str, spec: str, path: str, message: str) -> None:
    found = problems(kind, spec)
    assert (path, message) in found, found


VALID: list[tuple[str, str | dict[str, Any]]] = [
    ("VirtualService", "hosts: ['*']\ngateways: [istio-system/ingress]\nhttp: [{" + ROUTE + "}]"),
    ("VirtualService", "hosts: [reviews]\nhttp: "
                       "[{route: [{destination: {host: reviews, subset: v1}, weight: 90}, "
                       "{destination: {host: reviews, subset: v2}, weight: 20}]}]"),
    ("VirtualService", "hosts: [a]\nhttp: [{match: [{headers: {end-user: {exact: jason}}, "
                       "uri: {regex: '^/api/v[0-9]+/.*'}}], route: [{destination: "
                       "{host: a}}], timeout: 1.5s, "
                       "retries: "
                       "{attempts: 3, perTryTimeout: 300ms, retryOn: 'gateway-error,connect-failure,503'}}]"),
    ("VirtualService", "hosts: [a]\nhttp: [{redirect: {uri: /v2, redirectCode: 301}}, "
                       "{directResponse: {status: 503, body: {string: down}}}]"),
    ("VirtualService", "hosts: [a]\nhttp: "
                       "[{route: [{destination: {host: a}}], fault: {delay: {fixedDelay: 7s, "
                       "percentage: {value: 0.1}}, abort: {grpcStatus: UNAVAILABLE, percentage: "
                       "{value: 50}}}}]"),
    ("VirtualService", "http: [{match: [{uri: {prefix: /a}}], route: [{destination: {host: a}}]}]"),
    ("VirtualService", "http: [{match: [{uri: {regex: '/a.*'}, withoutHeaders: {x-debug: {regex: '*'}}}], "
                       "route: [{destination: {host: a}}]}]"),
    ("VirtualService", "hosts: [a.com]\ngateways: [mesh, gw]\ntls: "
                       "[{match: [{sniHosts: [a.com], port: 443}], "
                       "route: [{destination: {host: a.com}}]}]"),
    ("VirtualService", "hosts: [a]\nhttp: [{delegate: {name: b, namespace: c}, "
                       "match: [{uri: {prefix: /b}}]}]"),
    ("DestinationRule", "host: '*.example.com'\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: "
                        "{name: user, ttl: 0s}}}, connectionPool: {http: {http1MaxPendingRequests: 1, "
                        "maxRequestsPerConnection: 1}, tcp: {maxConnections: 1, connectTimeout: 30ms}}, "
                        "outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 3m, "
                        "maxEjectionPercent: 100}}"),
    ("DestinationRule", "host: a\ntrafficPolicy: {portLevelSettings: [{port: {number: 80}, loadBalancer: "
                        "{simple: LEAST_REQUEST}}]}\nsubsets: [{name: v1, labels: {version: v1}}, "
                        "{name: v2, labels: {version: v2}, "
                        "trafficPolicy: {loadBalancer: {simple: RANDOM}}}]"),
    ("Gateway", "selector: {istio: ingressgateway}\nservers: "
                "[{port: {number: 80, name: http, protocol: HTTP}, "
                "hosts: ['bookinfo/*.example.com', '*'], tls: {httpsRedirect: true}}, "
                "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, "
                "serverCertificate: /c.pem, privateKey: /k.pem}}, {port: {number: 15443, name: tls, "
                "protocol: TLS}, hosts: ['*'], tls: {mode: AUTO_PASSTHROUGH}}]"),
    ("ServiceEntry", "hosts: [api.example.com]\nports: [{number: 443, name: https, protocol: TLS}]\n"
                     "resolution: DNS\nlocation: MESH_EXTERNAL"),
    ("ServiceEntry", "hosts: [db.internal]\naddresses: [10.0.0.0/24]\nports: [{number: 5432, name: pg, "
                     "protocol: TCP}]\nresolution: STATIC\nendpoints: [{address: 10.0.0.5, ports: "
                     "{pg: 15432}}]"),
    ("WorkloadEntry", "address: 10.1.1.1\nlabels: {app: ratings}\nports: {http: 9080}\nserviceAccount: "
                      "ratings"),
    ("Sidecar", "egress: [{port: {number: 9080, protocol: HTTP, name: http}, hosts: ['./*']}, "
                "{hosts: ['istio-system/*', '~/*', '*/reviews.default.svc.cluster.local']}]"),
    ("Service", "selector: {app: reviews}\nports: [{port: 9080, name: http, targetPort: 9080}, "
                "{port: 9090, name: grpc, targetPort: grpc-port, appProtocol: grpc}]"),
    ("Service", "clusterIP: None\nselector: {app: x}"),
    ("Namespace", {}),
]


@pytest.mark.parametrize(("kind", "spec"), VALID, ids=[f"{k}#{i}" for i, (k, _) in enumerate(VALID)])
def test_config_valid_spec_has_no_errors(kind: str, spec: str) -> None:
    assert problems(kind, spec) == []


def test_config_gateway_name_must_be_a_dns_label() -> None:
    spec = "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]"
    assert problems("Gateway", spec, name="my.gateway") == [
        ("metadata.name", 'invalid gateway name: "my.gateway" (must be a DNS label: no dots)')]


def test_config_namespace_name_must_be_a_label() -> None:
    assert problems("Namespace", {}, name="a.b")[0][0] == "metadata.name"


def test_config_semantic_checks_wait_for_a_sound_structure() -> None:
    # weight is a string: the schema reports it; the semantic weight/total checks do not pile on
    spec = "hosts: [a]\nhttp: [{route: [{destination: {host: a}, weight: 'x'}, {destination: {host: b}}]}]"
    assert problems("VirtualService", spec) == [
        ("spec.http[0].route[0].weight", 'Invalid value: "x": must be of type integer, got string')]


def test_config_istio_warnings() -> None:
    unused = warnings("VirtualService", "hosts: [a]\nhttp: [{" + ROUTE + "}, {" + ROUTE + "}]")
    expected = ("spec.http[1]", "[IST0130] VirtualService rule #1 not used (only the last rule can have no "
                                "matches).")
    assert expected in unused
    dup = warnings("VirtualService", "hosts: [a]\nhttp: [{match: [{uri: {exact: /a}}], " + ROUTE + "}, "
                   "{name: second, match: [{uri: {exact: /a}}], " + ROUTE + "}]")
    assert ("spec.http[1]", '[IST0130] VirtualService rule "second" not used (all matches used by prior '
                            "rules).") in dup
    assert ("spec.http[1].match[0]", '[IST0131] VirtualService rule "second" match #0 is not used '
                                     "(duplicate/overlapping match in rule #0).") in dup
    legacy = warnings("VirtualService", "hosts: [a]\ngateways: [gw.istio-system]\nhttp: [{" + ROUTE + "}]")
    assert legacy == [("spec.gateways[0]", 'using legacy gatewayName format "gw.istio-system"; prefer the '
                                           '<namespace>/<name> format: "istio-system/gw"')]


def test_config_unhonoured_fields_are_warnings_at_their_paths() -> None:
    spec = ("hosts: [a]\nhttp: [{" + ROUTE + "}, {" + ROUTE + ", mirrors: [{destination: {host: m}}], "
            "match: [{uri: {prefix: /m}}], redirect: {uri: /x, prefixRewrite: /y}}]")
    found = warnings("VirtualService", spec)
    assert ("spec.http[1].mirrors", MESSAGE) not in found     # mirrors are honoured now
    assert [w for w in found if w[0].startswith("spec.http[1].redirect")] == [
        ("spec.http[1].redirect.prefixRewrite", f"{MESSAGE}: redirect prefix rewriting is not translated yet "
                                                "(use redirect.uri)")]
    gw = ("servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], "
          "tls: {mode: SIMPLE, credentialNames: [bookinfo-cert]}}]")
    assert warnings("Gateway", gw) == [(
        "spec.servers[0].tls.credentialNames",
        f"{MESSAGE}: several credentials per server are not supported yet (use credentialName)")]
    # a single credentialName is served over SDS
    assert warnings("Gateway", gw.replace("credentialNames: [bookinfo-cert]", "credentialName: c")) == []
    assert warnings("WorkloadEntry", "address: 1.1.1.1\nnetwork: n1") == [
        ("spec.network", f"{MESSAGE}: multi-network meshes are not supported yet")]


def test_config_unhonoured_table_patterns_are_well_formed() -> None:
    for kind, entries in UNHONOURED.items():
        assert kind in ("Gateway", "VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry",
                        "Sidecar", "Service", "Deployment", "Namespace", "Telemetry")
        for entry in entries:
            assert entry.pattern.startswith("spec.")
    c = cfg("DestinationRule", "host: a\nsubsets: [{name: a, trafficPolicy: {tls: {mode: SIMPLE}}}, "
                               "{name: b}]")
    assert present_paths(c, "spec.subsets[*].trafficPolicy.tls") == ["spec.subsets[0].trafficPolicy.tls"]
    assert present_paths(c, "spec.subsets[1].name") == ["spec.subsets[1].name"]


def test_config_issue_lines_use_the_nearest_known_field() -> None:
    c = Config(kind="VirtualService", api_version="networking.istio.io/v1", name="r", namespace="default",
               spec={"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}}],
                                               "retries": {"perTryTimeout": "2s"}}]},
               source=Source("r.yaml", 3),
               lines={"": 3, "spec": 7, "spec.http[0]": 9, "spec.http[0].retries": 12})
    issues = validate(c)
    assert [str(i) for i in issues] == [
        "r.yaml:12: VirtualService/r: spec.http[0].retries.attempts: http retry policy configured when "
        "attempts "
        "are set to 0 (disabled)"]
    no_lines = Config(kind="Gateway", api_version="networking.istio.io/v1", name="g", namespace="default",
                      spec={"servers": []})
    assert [str(i) for i in validate(no_lines)] == [
        "Gateway/g: spec.servers: gateway must have at least one server"]

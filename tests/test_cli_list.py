"""`bnas-zoo list` says whether each model's weights are published, asking a Hub (here a local fake one on
loopback) only about the pinned revisions that pretrained=True would load, and says 'unknown' when offline or
when the Hub cannot be reached. No registered name downloads from a repository that this version of bnas_zoo
does not pin."""
import http.server
import threading

import huggingface_hub.constants as hf_constants
import pytest

import bnas_zoo
from bnas_zoo import registry
from bnas_zoo.cli import main
from bnas_zoo.hub.status import weights_status


class _FakeHub(http.server.BaseHTTPRequestHandler):
    published = set()
    requests = []

    def do_GET(self):
        self.do_HEAD()

    def do_HEAD(self):  # file_exists: HEAD {endpoint}/{repo}/resolve/{revision}/{file}
        self.requests.append(self.path)
        repo = '/'.join(self.path.strip('/').split('/')[:2])
        if repo in self.published and self.path.endswith('/model.safetensors'):
            self.send_response(200)
            self.send_header('Content-Length', '0')
            self.send_header('X-Repo-Commit', '0' * 40)
            self.send_header('ETag', '"abc"')
        else:
            self.send_response(404)
            self.send_header('X-Error-Code', 'EntryNotFound' if repo in self.published else 'RepoNotFound')
            self.send_header('Content-Length', '0')
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(monkeypatch):
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', False)
    endpoint = f'http://127.0.0.1:{server.server_port}'  # as HF_ENDPOINT would set it at import
    monkeypatch.setattr(hf_constants, 'ENDPOINT', endpoint)
    monkeypatch.setattr(hf_constants, 'HUGGINGFACE_CO_URL_TEMPLATE', endpoint + '/{repo_id}/resolve/{revision}/{filename}')
    _FakeHub.requests = []
    yield _FakeHub
    server.shutdown()


def test_list_asks_the_hub_which_weights_are_published(fake_hub, capsys, monkeypatch):
    fake_hub.published = {bnas_zoo.hub_repo_id('bnas_d')}
    status = weights_status([bnas_zoo.hub_repo_id('bnas_d'), bnas_zoo.hub_repo_id('bnas_a')], timeout=2)
    assert status == {bnas_zoo.hub_repo_id('bnas_d'): 'published', bnas_zoo.hub_repo_id('bnas_a'): 'not published'}
    # nothing pinned (this version): list asks the Hub nothing and says no weights are published
    fake_hub.requests = []
    assert main(['list']) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert rows['bnas_d'].split()[-3:] == ['-', 'not', 'published'] and 'no weights are published yet' in out
    assert fake_hub.requests == []
    # once a revision is pinned, list asks about that revision
    commit = 'a' * 40
    monkeypatch.setattr(registry, 'PUBLISHED_REVISIONS', {'bnas_d': commit})
    assert main(['list']) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert f'{bnas_zoo.hub_repo_id("bnas_d")}@{commit}' in rows['bnas_d'] and rows['bnas_d'].endswith(' published')
    assert rows['bnas_mini'].split()[-3:] == ['-', 'not', 'published']
    assert fake_hub.requests == [f'/{bnas_zoo.hub_repo_id("bnas_d")}/resolve/{commit}/model.safetensors']


def test_list_offline_or_unreachable_says_unknown(monkeypatch, capsys):
    monkeypatch.setattr(registry, 'PUBLISHED_REVISIONS', {name: 'b' * 40 for name in bnas_zoo.VARIANTS})
    assert main(['list']) == 0  # the suite runs with HF_HUB_OFFLINE=1
    out = capsys.readouterr().out
    assert out.count('unknown (offline mode)') == len(bnas_zoo.VARIANTS)
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(hf_constants, 'ENDPOINT', 'http://127.0.0.1:9')  # nothing listens there
    assert set(weights_status(['o/a', 'o/b'], timeout=1).values()) == {'unknown (Hub unreachable)'}
    assert main(['list', '--no-hub']) == 0
    assert 'not checked' in capsys.readouterr().out


def test_pretrained_without_weights_says_what_to_do():
    import timm
    with pytest.raises(bnas_zoo.CheckpointError) as e:
        timm.create_model('bnas_d', pretrained=True)
    msg = str(e.value)
    assert bnas_zoo.hub_repo_id('bnas_d') in msg and 'no pretrained weights are published' in msg
    assert 'convert-official' in msg and "local-dir:DIR" in msg


def test_no_download_from_an_unpublished_repository(fake_hub):
    """Whoever registers the bnas-zoo namespace must not serve the weights of every user: no registered name
    lists pretrained weights, and pretrained=True fails with the clear error before any request."""
    import timm
    fake_hub.published = {bnas_zoo.hub_repo_id(name) for name in bnas_zoo.VARIANTS}  # a squatter's uploads
    assert timm.list_pretrained('bnas*') == []
    for name in ('bnas_d', 'bnas_mini.cifar10', 'bnas_d_grouped'):
        with pytest.raises(bnas_zoo.CheckpointError, match='nothing was downloaded'):
            timm.create_model(name, pretrained=True)
    assert fake_hub.requests == []
    assert registry.pretrained_hub_id('bnas_d') is None


def test_a_pinned_revision_and_a_mirror(monkeypatch):
    monkeypatch.setattr(registry, 'PUBLISHED_REVISIONS', {'bnas_d': 'c' * 40})
    assert registry.pretrained_hub_id('bnas_d') == f'bnas-zoo/bnas_d.in1k@{"c" * 40}'
    assert registry.pretrained_hub_id('bnas_a') is None
    monkeypatch.setattr(registry, 'HUB_MIRROR', 'my-mirror')
    assert registry.pretrained_hub_id('bnas_a') == 'my-mirror/bnas_a.cifar10'  # the user's choice: every variant

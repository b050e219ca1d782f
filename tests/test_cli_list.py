"""`bnas-zoo list` says whether each model's weights are published, asking a Hub (here a local fake one on
loopback), and says 'unknown' when offline or when the Hub cannot be reached."""
import http.server
import threading

import huggingface_hub.constants as hf_constants
import pytest

import bnas_zoo
from bnas_zoo.cli import main
from bnas_zoo.hub.status import weights_status


class _FakeHub(http.server.BaseHTTPRequestHandler):
    published = set()

    def do_HEAD(self):  # file_exists: HEAD {endpoint}/{repo}/resolve/{revision}/{file}
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
    yield _FakeHub
    server.shutdown()


def test_list_asks_the_hub_which_weights_are_published(fake_hub, capsys):
    fake_hub.published = {bnas_zoo.hub_repo_id('bnas_d')}
    status = weights_status([bnas_zoo.hub_repo_id('bnas_d'), bnas_zoo.hub_repo_id('bnas_a')], timeout=2)
    assert status == {bnas_zoo.hub_repo_id('bnas_d'): 'published', bnas_zoo.hub_repo_id('bnas_a'): 'not published'}
    assert main(['list']) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows['bnas_d'].endswith(' published') and rows['bnas_mini'].endswith('not published')


def test_list_offline_or_unreachable_says_unknown(monkeypatch, capsys):
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
    assert bnas_zoo.hub_repo_id('bnas_d') in msg and 'not be published yet' in msg
    assert 'convert-official' in msg and "local-dir:DIR" in msg

"""The pages' texts in English and Japanese, and choosing a language for a request.

Each entry is (English, Japanese). A text may name parameters in braces ({name}); they are
filled with str.format and escaped with the rest by the template engine. A test checks that
every text exists in both languages and that every key used by the templates exists.
"""

from __future__ import annotations

from typing import Any

LANGS = ("en", "ja")
DEFAULT_LANG = "en"

_EN, _JA = 0, 1

CATALOGUE: dict[str, tuple[str, str]] = {
    # --- layout ---------------------------------------------------------------------------
    "a11y.skip": ("Skip to content", "本文へ移動"),
    "brand.home": ("DM home", "DM ホーム"),
    "nav.label": ("Main", "メイン"),
    "nav.nodes": ("Nodes", "ノード"),
    "nav.instances": ("Instances", "インスタンス"),
    "nav.images": ("Images", "イメージ"),
    "nav.ssh_keys": ("SSH keys", "SSH 鍵"),
    "nav.port_maps": ("Port maps", "ポートマップ"),
    "nav.users": ("Users", "ユーザー"),
    "nav.audit": ("Audit", "監査ログ"),
    "nav.account": ("Account", "アカウント"),
    "nav.logout": ("Log out", "ログアウト"),
    "prefs.language": ("Language", "言語"),
    "prefs.theme": ("Theme", "テーマ"),
    "lang.en": ("EN", "EN"),
    "lang.ja": ("日本語", "日本語"),
    "theme.light": ("Light", "ライト"),
    "theme.dark": ("Dark", "ダーク"),
    "theme.auto": ("Auto", "自動"),
    "footer.tagline": ("self-hosted control plane for your compute nodes",
                       "計算ノードのためのセルフホスト型コントロールプレーン"),
    "table.actions": ("Actions", "操作"),
    "pager.label": ("Pages", "ページ"),
    "pager.first": ("← Newest", "← 最新"),
    "pager.next": ("Next page →", "次のページ →"),
    "time.never": ("never", "なし"),
    # --- forms ------------------------------------------------------------------------------
    "form.optional": ("(optional)", "(任意)"),
    "form.save": ("Save changes", "変更を保存"),
    "form.cancel": ("Cancel", "キャンセル"),
    "field.email": ("Email", "メールアドレス"),
    "field.username": ("Username", "ユーザー名"),
    "field.username_hint": ("Lower-case letters, digits, '.', '_' and '-'. Leave empty to derive it "
                            "from the email address.",
                            "英小文字・数字・「.」「_」「-」が使えます。空欄ならメールアドレスから作ります。"),
    "field.password": ("Password", "パスワード"),
    "field.password2": ("Repeat the password", "パスワード (確認)"),
    "field.password_hint": ("At least 8 characters. A few unrelated words make a strong one.",
                            "8 文字以上。関係のない単語をいくつか並べると強いパスワードになります。"),
    "field.current_password": ("Current password", "現在のパスワード"),
    "field.new_password": ("New password", "新しいパスワード"),
    # --- log in / setup ---------------------------------------------------------------------
    "login.title": ("Log in", "ログイン"),
    "login.heading": ("Log in to DM", "DM にログイン"),
    "login.intro": ("Use the email address and password of your DM account.",
                    "DM アカウントのメールアドレスとパスワードを入力してください。"),
    "login.submit": ("Log in", "ログイン"),
    "login.forgot": ("Forgot your password? An administrator can set a new one for you.",
                     "パスワードを忘れた場合は、管理者に新しいパスワードを設定してもらってください。"),
    "setup.title": ("Set up DM", "DM のセットアップ"),
    "setup.heading": ("Create the first administrator", "最初の管理者を作成"),
    "setup.intro": ("This one-time link creates DM's first administrator account. Once the account "
                    "exists, the link stops working.",
                    "この一度限りのリンクで DM の最初の管理者アカウントを作成します。"
                    "作成後、このリンクは使えなくなります。"),
    "setup.submit": ("Create administrator", "管理者を作成"),
    "setup.done_heading": ("DM is already set up", "DM はセットアップ済みです"),
    "setup.done_text": ("An administrator account exists. Log in with your account, or ask an "
                        "administrator to create one for you.",
                        "管理者アカウントは作成済みです。ご自分のアカウントでログインするか、"
                        "管理者にアカウントの作成を依頼してください。"),
    "setup.bad_heading": ("This setup link does not work", "このセットアップリンクは無効です"),
    "setup.bad_text": ("The link is wrong, already used, or was replaced when dmd restarted.",
                       "リンクが間違っているか、使用済みか、dmd の再起動で新しいリンクに置き換えられています。"),
    "setup.need_heading": ("DM is not set up yet", "DM はまだセットアップされていません"),
    "setup.need_text": ("To create the first administrator, open the one-time setup link that dmd "
                        "printed when it started.",
                        "最初の管理者を作成するには、dmd の起動時に表示された"
                        "一度限りのセットアップリンクを開いてください。"),
    "setup.where_link": ("The newest link is in dmd's output and log (look for \"Set up DM\").",
                         "最新のリンクは dmd の出力とログにあります (「Set up DM」を探してください)。"),
    # --- account ----------------------------------------------------------------------------
    "account.title": ("Account", "アカウント"),
    "account.intro": ("Your profile, your password and your API tokens.",
                      "プロフィール、パスワード、API トークンの管理。"),
    "account.profile": ("Profile", "プロフィール"),
    "account.profile_hint": ("To change your email address or username, ask an administrator.",
                             "メールアドレスやユーザー名の変更は管理者に依頼してください。"),
    "account.password": ("Change password", "パスワードの変更"),
    "account.password_intro": ("Changing it ends your sessions in other browsers.",
                               "変更すると、他のブラウザーでのセッションはすべて終了します。"),
    "account.password_submit": ("Change password", "パスワードを変更"),
    "user.role": ("Role", "ロール"),
    "user.role_hint": ("Administrators manage users, nodes and images and see the audit log.",
                       "管理者はユーザー・ノード・イメージを管理し、監査ログを閲覧できます。"),
    "user.status": ("Status", "状態"),
    "user.active": ("Active", "有効"),
    "user.disabled": ("Disabled", "無効"),
    "user.created": ("Member since", "登録日"),
    "user.last_login": ("Last login", "最終ログイン"),
    "user.quotas": ("Quotas", "クォータ"),
    "user.quotas_hint": ("Leave a field empty for no limit.", "空欄にすると無制限になります。"),
    "role.admin": ("Administrator", "管理者"),
    "role.user": ("User", "一般ユーザー"),
    "quota.instance_limit": ("Instances", "インスタンス"),
    "quota.node_limit": ("Nodes", "ノード"),
    "quota.gpu_limit": ("GPUs", "GPU"),
    "quota.none": ("No limit", "無制限"),
    # --- tokens -----------------------------------------------------------------------------
    "tokens.title": ("API tokens", "API トークン"),
    "tokens.intro": ("Tokens let scripts and tools use DM's API as you. Treat them like passwords.",
                     "トークンを使うと、スクリプトやツールがあなたとして DM の API を利用できます。"
                     "パスワードと同じように扱ってください。"),
    "tokens.none": ("You have no API tokens.", "API トークンはまだありません。"),
    "tokens.name": ("Name", "名前"),
    "tokens.name_hint": ("What the token is for, e.g. \"laptop CLI\".",
                         "用途がわかる名前 (例: 「ノート PC の CLI」)。"),
    "tokens.prefix": ("Token starts with", "トークンの先頭"),
    "tokens.created_at": ("Created", "作成日時"),
    "tokens.expires": ("Expires", "有効期限"),
    "tokens.never_expires": ("never", "無期限"),
    "tokens.last_used": ("Last used", "最終使用"),
    "tokens.revoke": ("Revoke", "失効"),
    "tokens.revoke_named": ("Revoke the token {name}", "トークン {name} を失効"),
    "tokens.new": ("New token", "新しいトークン"),
    "tokens.expires_in_days": ("Expires after (days)", "有効期間 (日)"),
    "tokens.expires_hint": ("Leave empty for a token that does not expire.",
                            "空欄にすると無期限のトークンになります。"),
    "tokens.create": ("Create token", "トークンを作成"),
    "tokens.created": ("Token \"{name}\" created", "トークン「{name}」を作成しました"),
    "tokens.copy_now": ("Copy it now and keep it somewhere safe: it will not be shown again.",
                        "今すぐコピーして安全な場所に保管してください。二度と表示されません。"),
    "tokens.copy": ("Copy", "コピー"),
    "tokens.copied": ("Copied", "コピーしました"),
    "tokens.usage": ("Send it in the Authorization header:", "Authorization ヘッダーで送信します:"),
    "tokens.limit": ("You can have up to {max} tokens.", "トークンは最大 {max} 個まで作成できます。"),
    # --- users (admin) ----------------------------------------------------------------------
    "users.title": ("Users", "ユーザー"),
    "users.intro": ("Everyone who can log in to DM, their role and their quotas.",
                    "DM にログインできるユーザーと、そのロール・クォータ。"),
    "users.new": ("New user", "新規ユーザー"),
    "users.user": ("User", "ユーザー"),
    "users.you": ("you", "あなた"),
    "users.edit": ("Edit", "編集"),
    "users.create": ("Create user", "ユーザーを作成"),
    "users.password_hint": ("At least 8 characters. Give it to the user over a safe channel; they "
                            "can change it under Account.",
                            "8 文字以上。安全な方法で本人に伝えてください。本人は「アカウント」で変更できます。"),
    "users.details": ("Details", "詳細"),
    "users.self_role_hint": ("This is your account: changing your own role ends your session.",
                             "これはあなた自身のアカウントです。自分のロールを変更するとセッションが終了します。"),
    "users.reset_password": ("Set a new password", "新しいパスワードを設定"),
    "users.reset_intro": ("The user's sessions end; their API tokens keep working.",
                          "このユーザーのセッションは終了します。API トークンは引き続き使えます。"),
    "users.reset_submit": ("Set password", "パスワードを設定"),
    "users.access": ("Access", "アクセス"),
    "users.self_access": ("You cannot disable or delete your own account.",
                          "自分自身のアカウントを無効化・削除することはできません。"),
    "users.disable_intro": ("A disabled user cannot log in and their API tokens stop working. "
                            "You can enable them again later.",
                            "無効化されたユーザーはログインできず、API トークンも使えなくなります。"
                            "後で再び有効にできます。"),
    "users.disable": ("Disable user", "ユーザーを無効化"),
    "users.enable_intro": ("This user is disabled. Enabling lets them log in again.",
                           "このユーザーは無効です。有効にすると再びログインできます。"),
    "users.enable": ("Enable user", "ユーザーを有効化"),
    "users.delete_intro": ("Deleting removes the user and their API tokens for good.",
                           "削除すると、ユーザーとその API トークンは完全に消去されます。"),
    "users.delete": ("Delete user…", "ユーザーを削除…"),
    "users.delete_title": ("Delete {name}?", "{name} を削除しますか?"),
    "users.delete_confirm": ("You are about to delete the user {name} ({email}).",
                             "ユーザー {name} ({email}) を削除しようとしています。"),
    "users.delete_effects": ("Their sessions end and their API tokens stop working. This cannot be "
                             "undone.",
                             "セッションは終了し、API トークンも使えなくなります。この操作は取り消せません。"),
    "users.delete_submit": ("Delete for good", "完全に削除"),
    # --- audit ------------------------------------------------------------------------------
    "audit.title": ("Audit log", "監査ログ"),
    "audit.intro": ("Who did what and when, newest first.", "誰がいつ何をしたかの記録 (新しい順)。"),
    "audit.filter": ("Action", "アクション"),
    "audit.filter_hint": ("A family such as user. or an exact action such as user.create.",
                          "user. のような種類、または user.create のような正確なアクション名。"),
    "audit.apply": ("Filter", "絞り込み"),
    "audit.clear": ("Show all", "すべて表示"),
    "audit.when": ("Time", "日時"),
    "audit.actor": ("Actor", "実行者"),
    "audit.action": ("Action", "アクション"),
    "audit.target": ("Target", "対象"),
    "audit.ip": ("Address", "アドレス"),
    "audit.detail": ("Details", "詳細"),
    "audit.none": ("No entries", "記録はありません"),
    "audit.none_text": ("Nothing matches this filter yet.", "この条件に一致する記録はまだありません。"),
    # --- features still to come -------------------------------------------------------------
    "empty.not_yet": ("This part of DM is not available yet. It arrives in a coming version.",
                      "この機能はまだ利用できません。今後のバージョンで提供されます。"),
    "empty.nodes.intro": ("The machines that run your instances.", "インスタンスを実行するマシン。"),
    "empty.nodes.heading": ("No nodes yet", "ノードはまだありません"),
    "empty.nodes.what": ("Compute nodes registered with DM will be listed here with their CPU, "
                         "memory, disk and GPUs, whether they are online, and what runs on them.",
                         "DM に登録された計算ノードが、CPU・メモリー・ディスク・GPU、"
                         "オンライン状態、実行中のものとともにここに表示されます。"),
    "empty.instances.intro": ("Containers you run on the nodes.", "ノード上で動かすコンテナー。"),
    "empty.instances.heading": ("No instances yet", "インスタンスはまだありません"),
    "empty.instances.what": ("Your instances will be listed here with their node, image, CPUs, "
                             "memory, GPUs and the ssh command to reach them.",
                             "あなたのインスタンスが、ノード・イメージ・CPU・メモリー・GPU、"
                             "接続用の ssh コマンドとともにここに表示されます。"),
    "empty.images.intro": ("The catalogue of images instances start from.",
                           "インスタンスの起動元となるイメージのカタログ。"),
    "empty.images.heading": ("No images yet", "イメージはまだありません"),
    "empty.images.what": ("Images in DM's catalogue will be listed here with their size and the "
                          "nodes that hold them.",
                          "DM のカタログにあるイメージが、サイズと保持しているノードとともにここに表示されます。"),
    "empty.ssh_keys.intro": ("Public keys DM puts into your instances.",
                             "DM がインスタンスに設定する公開鍵。"),
    "empty.ssh_keys.heading": ("No SSH keys yet", "SSH 鍵はまだありません"),
    "empty.ssh_keys.what": ("Your SSH public keys will be listed here with their fingerprints; you "
                            "will choose which of them go into each instance.",
                            "あなたの SSH 公開鍵がフィンガープリントとともにここに表示されます。"
                            "インスタンスごとに使う鍵を選べるようになります。"),
    "empty.port_maps.intro": ("Ports of your instances reachable on the nodes' addresses.",
                              "ノードのアドレスから到達できるインスタンスのポート。"),
    "empty.port_maps.heading": ("No port maps yet", "ポートマップはまだありません"),
    "empty.port_maps.what": ("Port maps will be listed here: which host port on which node leads "
                             "to which port of an instance. They can be added to running instances.",
                             "どのノードのどのホストポートが、どのインスタンスのどのポートにつながるかが"
                             "ここに表示されます。実行中のインスタンスにも追加できます。"),
    # --- flash messages ---------------------------------------------------------------------
    "flash.logged_out": ("You have logged out.", "ログアウトしました。"),
    "flash.session_ended": ("Your session has ended. Log in again.",
                            "セッションが終了しました。もう一度ログインしてください。"),
    "flash.setup_done": ("Welcome to DM. Your administrator account is ready.",
                         "DM へようこそ。管理者アカウントの準備ができました。"),
    "flash.password_changed": ("Your password has been changed. Your other sessions have ended.",
                               "パスワードを変更しました。他のセッションは終了しました。"),
    "flash.token_revoked": ("The token \"{name}\" has been revoked.",
                            "トークン「{name}」を失効させました。"),
    "flash.user_created": ("The user {name} has been created.", "ユーザー {name} を作成しました。"),
    "flash.user_saved": ("Changes to {name} have been saved.", "{name} の変更を保存しました。"),
    "flash.password_reset": ("A new password has been set for {name}.",
                             "{name} に新しいパスワードを設定しました。"),
    "flash.user_disabled": ("{name} has been disabled.", "{name} を無効にしました。"),
    "flash.user_enabled": ("{name} has been enabled.", "{name} を有効にしました。"),
    "flash.user_deleted": ("The user {name} has been deleted.", "ユーザー {name} を削除しました。"),
    # --- form errors ------------------------------------------------------------------------
    "err.invalid": ("Some input is not valid; check the fields and try again.",
                    "入力に誤りがあります。内容を確認してもう一度お試しください。"),
    "err.other": ("That did not work: {message}", "処理できませんでした: {message}"),
    "err.passwords_differ": ("The two passwords are not the same.", "2 つのパスワードが一致しません。"),
    "err.field.email": ("Enter a valid email address.", "正しいメールアドレスを入力してください。"),
    "err.field.username": ("Usernames use 1 to 64 lower-case letters, digits, '.', '_' or '-', starting "
                           "with a letter or digit.",
                           "ユーザー名は英小文字・数字・「.」「_」「-」の 1〜64 文字で、"
                           "先頭は英小文字か数字にしてください。"),
    "err.field.password": ("The password must be 8 to 1024 characters long.",
                           "パスワードは 8〜1024 文字にしてください。"),
    "err.field.new_password": ("The new password must be 8 to 1024 characters long.",
                               "新しいパスワードは 8〜1024 文字にしてください。"),
    "err.field.current_password": ("Enter your current password.", "現在のパスワードを入力してください。"),
    "err.field.role": ("Choose a role.", "ロールを選んでください。"),
    "err.field.instance_limit": ("The instance quota must be a whole number from 0, or empty.",
                                 "インスタンスのクォータは 0 以上の整数か空欄にしてください。"),
    "err.field.node_limit": ("The node quota must be a whole number from 0, or empty.",
                             "ノードのクォータは 0 以上の整数か空欄にしてください。"),
    "err.field.gpu_limit": ("The GPU quota must be a whole number from 0, or empty.",
                            "GPU のクォータは 0 以上の整数か空欄にしてください。"),
    "err.field.name": ("Give the token a name of 1 to 100 characters, on one line.",
                       "トークンには 1〜100 文字の名前を 1 行で付けてください。"),
    "err.field.expires_in_days": ("The lifetime must be a whole number of days from 1 to 3650, or "
                                  "empty.",
                                  "有効期間は 1〜3650 の整数 (日) か空欄にしてください。"),
    "err.field.token": ("This setup link is not valid.", "このセットアップリンクは無効です。"),
    "err.field.action": ("Filter by an action such as user.create or a family such as user. "
                         "(lower-case letters, '.' and '_').",
                         "user.create のようなアクション、または user. のような種類で絞り込んでください"
                         " (英小文字・「.」「_」)。"),
    "err.bad_credentials": ("Wrong email or password.", "メールアドレスまたはパスワードが違います。"),
    "err.wrong_current_password": ("The current password is wrong.", "現在のパスワードが違います。"),
    "err.account_disabled": ("This account is disabled. Ask an administrator.",
                             "このアカウントは無効です。管理者に問い合わせてください。"),
    "err.too_many_requests": ("Too many failed logins. Try again in {retry_after} seconds.",
                              "ログインの失敗が多すぎます。{retry_after} 秒後にもう一度お試しください。"),
    "err.email_taken": ("A user with this email address already exists.",
                        "このメールアドレスのユーザーはすでに存在します。"),
    "err.username_taken": ("This username is taken.", "このユーザー名はすでに使われています。"),
    "err.taken": ("That email address or username is already in use.",
                  "そのメールアドレスまたはユーザー名はすでに使われています。"),
    "err.last_admin": ("This is the last enabled administrator. Make someone else an administrator "
                       "first.",
                       "有効な管理者はこのユーザーだけです。先に他のユーザーを管理者にしてください。"),
    "err.too_many_tokens": ("You have too many tokens. Revoke one first.",
                            "トークンが多すぎます。先にどれかを失効させてください。"),
    "err.setup_done": ("Setup is already complete. Log in instead.",
                       "セットアップは完了しています。ログインしてください。"),
    "err.bad_setup_token": ("This setup link is not valid.", "このセットアップリンクは無効です。"),
    # --- error pages ------------------------------------------------------------------------
    "error.detail": ("Details", "詳細"),
    "error.home": ("Go to the start page", "トップページへ"),
    "error.400.title": ("Bad request", "不正なリクエスト"),
    "error.400.text": ("The request could not be understood.", "リクエストを解釈できませんでした。"),
    "error.401.title": ("Not logged in", "ログインしていません"),
    "error.401.text": ("Log in to see this page.", "このページを見るにはログインしてください。"),
    "error.403.title": ("Not allowed", "アクセスできません"),
    "error.403.text": ("You are not allowed to do this.", "この操作は許可されていません。"),
    "error.404.title": ("Page not found", "ページが見つかりません"),
    "error.404.text": ("There is nothing at this address. It may have been deleted, or the link is "
                       "wrong.",
                       "このアドレスには何もありません。削除されたか、リンクが間違っている可能性があります。"),
    "error.405.title": ("Not possible here", "この操作はできません"),
    "error.405.text": ("This address does not accept that kind of request.",
                       "このアドレスはその種類のリクエストを受け付けません。"),
    "error.409.title": ("Conflict", "競合"),
    "error.409.text": ("This clashes with the current state. Reload and try again.",
                       "現在の状態と矛盾します。再読み込みしてからもう一度お試しください。"),
    "error.413.title": ("Too large", "サイズが大きすぎます"),
    "error.413.text": ("What you sent is larger than DM accepts.",
                       "送信されたデータが DM の上限を超えています。"),
    "error.422.title": ("Invalid input", "入力が無効です"),
    "error.422.text": ("Some input is not valid.", "入力に誤りがあります。"),
    "error.429.title": ("Too many requests", "リクエストが多すぎます"),
    "error.429.text": ("Wait a moment, then try again.", "少し待ってからもう一度お試しください。"),
    "error.500.title": ("Something went wrong", "エラーが発生しました"),
    "error.500.text": ("DM ran into an internal error. The details are in dmd's log.",
                       "DM で内部エラーが発生しました。詳細は dmd のログにあります。"),
    "error.502.title": ("Bad gateway", "ゲートウェイエラー"),
    "error.502.text": ("A service DM depends on did not answer properly.",
                       "DM が利用しているサービスから正しい応答がありませんでした。"),
    "error.503.title": ("Unavailable", "利用できません"),
    "error.503.text": ("DM cannot handle this right now. Try again shortly.",
                       "現在この操作を処理できません。しばらくしてからお試しください。"),
    "error.4xx.title": ("Request refused", "リクエストを処理できません"),
    "error.4xx.text": ("DM could not handle this request.", "DM はこのリクエストを処理できませんでした。"),
    "error.5xx.title": ("Something went wrong", "エラーが発生しました"),
    "error.5xx.text": ("DM ran into an error. The details are in dmd's log.",
                       "DM でエラーが発生しました。詳細は dmd のログにあります。"),
    "error.csrf.title": ("This form has expired", "フォームの有効期限が切れました"),
    "error.csrf.text": ("The form was open too long or came from another site. Go back, reload "
                        "the page and send it again.",
                        "フォームを開いてから時間が経ちすぎたか、別のサイトから送信されました。"
                        "前のページに戻って再読み込みし、もう一度送信してください。"),
    "error.admin_only.title": ("For administrators only", "管理者専用"),
    "error.admin_only.text": ("This page is only for DM's administrators.",
                              "このページは DM の管理者だけが利用できます。"),
}


def has(key: str) -> bool:
    return key in CATALOGUE


def gettext(lang: str, key: str, **params: Any) -> str:
    """The text for `key` in `lang` (English when unknown), with {params} filled in."""
    entry = CATALOGUE.get(key)
    if entry is None:
        return key
    text = entry[_JA] if lang == "ja" else entry[_EN]
    if params:
        try:
            return text.format(**params)
        except (KeyError, IndexError, ValueError):
            return text
    return text


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    """The dm_lang cookie when valid, else the best of Accept-Language, else English."""
    if cookie in LANGS:
        return str(cookie)
    best: tuple[float, int, str] | None = None
    for pos, part in enumerate((accept_language or "")[:1000].split(",")):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGS:
            continue
        q = 1.0
        for p in params.split(";"):
            name, _, value = p.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        cand = (-q, pos, primary)
        if best is None or cand < best:
            best = cand
    return best[2] if best else DEFAULT_LANG

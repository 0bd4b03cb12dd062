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
    # --- nodes ------------------------------------------------------------------------------
    "nodes.title": ("Nodes", "ノード"),
    "nodes.intro": ("The machines you own or that are shared with you: their hardware, whether they "
                    "are online, and how busy they are.",
                    "あなたが所有している、または共有されているマシン。ハードウェア構成、オンライン状態、"
                    "負荷を確認できます。"),
    "nodes.intro_admin": ("Every machine registered with DM: their hardware, whether they are online, "
                          "and how busy they are.",
                          "DM に登録されたすべてのマシン。ハードウェア構成、オンライン状態、負荷を確認できます。"),
    "nodes.summary": ("{total} in total, {n_online} online", "合計 {total} 台、オンライン {n_online} 台"),
    "nodes.add": ("Add a node", "ノードを追加"),
    "nodes.add_intro": ("Give the new machine a name. DM then shows a dmc join command to run on it; "
                        "the command works once, for {ttl}.",
                        "新しいマシンの名前を決めてください。そのマシンで実行する dmc join コマンドが"
                        "表示されます。コマンドは 1 回限り、{ttl}有効です。"),
    "nodes.add_submit": ("Add node", "ノードを追加"),
    "nodes.empty.heading": ("No nodes yet", "ノードはまだありません"),
    "nodes.empty.text": ("A node is a machine that runs instances. Add one below: DM gives you a dmc "
                         "join command to run on that machine, and it appears here, online, within "
                         "seconds of dmc run.",
                         "ノードとはインスタンスを実行するマシンです。下のフォームで追加すると、"
                         "そのマシンで実行する dmc join コマンドが表示されます。dmc run を実行すると、"
                         "数秒でオンラインのノードとしてここに表示されます。"),
    "nodes.empty.local": ("To use the machine dmd runs on as a node, start dmd with",
                          "dmd が動いているこのマシンをノードとして使うには、次のように dmd を起動します:"),
    "node.name": ("Name", "名前"),
    "node.new_name": ("New name", "新しい名前"),
    "node.name_hint": ("1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
                       "英数字・「.」「_」「-」の 1〜64 文字で、先頭は英数字にしてください。"),
    "node.status": ("Status", "状態"),
    "node.status.online": ("Online", "オンライン"),
    "node.status.offline": ("Offline", "オフライン"),
    "node.status.pending": ("Waiting to join", "参加待ち"),
    "node.cpu": ("CPU", "プロセッサー"),
    "node.cpus": ("{n} CPUs", "{n} CPU"),
    "node.memory": ("Memory", "メモリー"),
    "node.disk": ("Disk", "ディスク"),
    "node.disk_free_of": ("{free} free of {total}", "{total} 中 {free} 空き"),
    "node.disk_free": ("{free} free", "{free} 空き"),
    "node.disk_total": ("of {total}", "合計 {total}"),
    "node.gpus": ("GPUs", "GPU"),
    "node.no_gpus": ("none", "なし"),
    "node.no_gpus_text": ("No GPUs were found on this node.", "このノードには GPU が見つかりませんでした。"),
    "node.agent": ("Agent", "エージェント"),
    "node.protocol": ("protocol {n}", "プロトコル {n}"),
    "node.access": ("Access", "権限"),
    "node.access.owner": ("Yours", "所有"),
    "node.access.shared": ("Shared with you", "共有"),
    "node.access.admin": ("Administrator", "管理者として"),
    "node.owned_by": ("owner: {name}", "所有者: {name}"),
    "node.owned_by_dm": ("runs inside dmd", "dmd 内で動作"),
    "node.local": ("this machine", "このマシン"),
    "node.local_hint": ("The agent runs inside dmd itself, on the machine dmd runs on.",
                        "エージェントは dmd 自身の中で、dmd と同じマシン上で動いています。"),
    "node.cordoned": ("cordoned", "受付停止中"),
    "node.cordoned_hint": ("No new instances are placed on this node.",
                           "このノードには新しいインスタンスが配置されません。"),
    "node.heartbeat": ("heartbeat {when}", "最終ハートビート {when}"),
    "node.last_seen": ("last seen {when}", "最終接続 {when}"),
    "node.never_connected": ("never connected", "まだ接続していません"),
    "node.join_expires": ("join command expires {when}", "参加コマンドの有効期限: {when}"),
    "node.join_expired": ("join command expired: make a new one", "参加コマンドの期限切れ: 新しく作成してください"),
    "node.connected_since": ("connected since {when}", "{when} から接続中"),
    "node.created": ("Added {when}.", "{when} に追加されました。"),
    "node.pending.title": ("Waiting for this node to join", "このノードの参加を待っています"),
    "node.pending.text": ("Run the dmc join command shown when the node was added on the machine, then "
                          "dmc run. The node shows as online here within seconds.",
                          "ノード追加時に表示された dmc join コマンドを対象のマシンで実行し、続けて "
                          "dmc run を実行してください。数秒でここにオンラインと表示されます。"),
    "node.pending.lost": ("The command is shown only once. If you no longer have it, or it has "
                          "expired, create a new one; the old one then stops working.",
                          "コマンドは 1 回しか表示されません。手元にない場合や期限が切れた場合は、"
                          "新しいコマンドを作成してください。古いコマンドは使えなくなります。"),
    "node.joined.title": ("Joined: now start the agent", "参加しました。エージェントを起動してください"),
    "node.joined.text": ("The machine has joined with its join command but its agent has not connected "
                         "yet. On the machine, run:",
                         "マシンは参加コマンドで参加しましたが、エージェントはまだ接続していません。"
                         "対象のマシンで次を実行してください:"),
    "node.new_join_token": ("New join command", "新しい参加コマンドを作成"),
    "node.shared_readonly": ("{name} shares this node with you: you can use it, but only its owner or "
                             "an administrator can change it.",
                             "このノードは {name} から共有されています。利用はできますが、"
                             "変更できるのは所有者と管理者だけです。"),
    "node.machine": ("Machine", "マシン"),
    "node.hostname": ("Host name", "ホスト名"),
    "node.os": ("Operating system", "OS"),
    "node.kernel": ("Kernel", "カーネル"),
    "node.runtime": ("Container runtime", "コンテナーランタイム"),
    "node.runtime_missing": ("Not reachable", "接続できません"),
    "node.addresses": ("Addresses", "アドレス"),
    "node.public_address": ("Public address", "公開アドレス"),
    "node.no_facts": ("Nothing is known about this machine yet: its agent has not connected.",
                      "このマシンの情報はまだありません。エージェントが接続していません。"),
    "node.manage": ("Manage", "管理"),
    "node.rename": ("Rename", "名前の変更"),
    "node.rename_submit": ("Rename", "名前を変更"),
    "node.cordon_title": ("Cordon", "受付停止"),
    "node.cordon_intro": ("Cordoning stops new instances from being placed on this node; those "
                          "already on it keep running. Use it before maintenance.",
                          "受付を停止すると、このノードに新しいインスタンスが配置されなくなります。"
                          "実行中のインスタンスはそのまま動き続けます。メンテナンス前に使ってください。"),
    "node.cordon": ("Cordon node", "受付を停止"),
    "node.uncordon_intro": ("This node is cordoned: no new instances are placed on it.",
                            "このノードは受付停止中です。新しいインスタンスは配置されません。"),
    "node.uncordon": ("Uncordon node", "受付を再開"),
    "node.join_token_title": ("Join command", "参加コマンド"),
    "node.join_token_intro": ("A new one-time dmc join command, valid for {ttl}: to join the node for "
                              "the first time or to join it again (for example after reinstalling the "
                              "machine). Any older join command stops working.",
                              "1 回限りの新しい dmc join コマンドを作成します ({ttl}有効)。初めての参加や、"
                              "マシンの再インストール後などの再参加に使います。以前の参加コマンドは"
                              "使えなくなります。"),
    "node.rotate_title": ("Rotate credential", "認証情報の更新"),
    "node.rotate_online": ("The agent authenticates with a secret credential. Rotating hands it a new "
                           "one over its link; it saves it and reconnects within seconds, and the old "
                           "one stops working. Do this if the agent's config file may have leaked.",
                           "エージェントは秘密の認証情報で接続しています。更新すると新しい認証情報が"
                           "接続経由で渡され、エージェントはそれを保存して数秒で再接続します。古い認証情報は"
                           "使えなくなります。エージェントの設定ファイルが漏れたおそれがあるときに実行してください。"),
    "node.rotate_offline": ("The agent authenticates with a secret credential. The node is not online, "
                            "so rotating revokes the old credential at once and gives you a new join "
                            "command to run on the machine.",
                            "エージェントは秘密の認証情報で接続しています。ノードがオンラインでないため、"
                            "更新すると古い認証情報はすぐに無効になり、マシンで実行する新しい参加コマンドが"
                            "表示されます。"),
    "node.rotate": ("Rotate credential", "認証情報を更新"),
    "node.delete_title": ("Delete", "削除"),
    "node.delete_intro": ("Removes the node from DM and disconnects its agent.",
                          "ノードを DM から削除し、エージェントを切断します。"),
    "node.delete": ("Delete node…", "ノードを削除…"),
    "node.delete_confirm_title": ("Delete {name}?", "{name} を削除しますか?"),
    "node.delete_confirm": ("You are about to delete the node {name}.",
                            "ノード {name} を削除しようとしています。"),
    "node.delete_effect_agent": ("Its agent is told that the node was deleted and disconnects.",
                                 "エージェントにノードの削除が通知され、接続が切れます。"),
    "node.delete_effect_credential": ("Its credential and any join command stop working; to add the "
                                      "machine again, add a new node and join it.",
                                      "認証情報と参加コマンドは使えなくなります。マシンを再び使うには、"
                                      "新しいノードを追加して参加させてください。"),
    "node.delete_effect_shares": ("Its shares and live metrics are removed. This cannot be undone.",
                                  "共有設定とライブメトリクスも削除されます。この操作は取り消せません。"),
    "node.delete_effect_local": ("This is dmd's own machine: it is added again the next time dmd starts "
                                 "with --local-node.",
                                 "これは dmd 自身のマシンです。次に --local-node 付きで dmd を起動すると"
                                 "再び追加されます。"),
    "node.delete_submit": ("Delete for good", "完全に削除"),
    # --- the join command -----------------------------------------------------------------------
    "join.created.title": ("Node {name} added: join it now", "ノード {name} を追加しました。参加させてください"),
    "join.token.title": ("New join command for {name}", "{name} の新しい参加コマンド"),
    "join.rotated.title": ("Credential of {name} revoked: join it again",
                           "{name} の認証情報を無効にしました。もう一度参加させてください"),
    "join.step1": ("On the machine, as root, run:", "対象のマシンで root として実行します:"),
    "join.once": ("This command is shown only once. It works one time, until {when} ({until}).",
                  "このコマンドは一度しか表示されません。使えるのは 1 回だけで、期限は {when} ({until}) です。"),
    "join.step2": ("Then start the agent:", "続けてエージェントを起動します:"),
    "join.systemd": ("To keep it running across reboots, use the systemd unit instead:",
                     "再起動後も動かし続けるには、代わりに systemd ユニットを使います:"),
    "join.after": ("The node shows as online on this page within seconds after dmc run starts.",
                   "dmc run を開始すると、数秒でこのページにオンラインと表示されます。"),
    # --- live metrics -------------------------------------------------------------------------
    "metrics.title": ("Live metrics", "ライブメトリクス"),
    "metrics.updated": ("Last sample", "最新のサンプル:"),
    "metrics.stale": ("the node is not online; these are the last figures it sent",
                      "ノードはオンラインではありません。最後に送られた値です"),
    "metrics.cpu": ("CPU usage", "CPU 使用率"),
    "metrics.memory": ("Memory used", "メモリー使用量"),
    "metrics.load": ("Load (1 min)", "負荷 (1 分)"),
    "metrics.load_5_15": ("5 min {five} · 15 min {fifteen}", "5 分 {five} · 15 分 {fifteen}"),
    "metrics.gpu": ("GPU usage", "GPU 使用率"),
    "metrics.gpu_mem": ("GPU memory", "GPU メモリー"),
    "metrics.history": ("The last {min} minutes", "直近 {min} 分間"),
    "metrics.history_hint": ("The lines show the last {min} minutes, or the time since the node "
                             "connected (0-100 %).",
                             "グラフは直近 {min} 分間 (接続してからそれより短い場合はその間) の推移です "
                             "(0〜100 %)。"),
    "metrics.waiting": ("The node is online; its first metrics arrive within seconds.",
                        "ノードはオンラインです。数秒で最初のメトリクスが届きます。"),
    "metrics.none_offline": ("No metrics: the node is not online.",
                             "メトリクスはありません。ノードはオンラインではありません。"),
    "gpu.name": ("Model", "モデル"),
    "gpu.memory": ("Memory used / total", "メモリー (使用 / 合計)"),
    "gpu.util": ("Usage", "使用率"),
    "gpu.temp": ("Temp.", "温度"),
    "gpu.driver": ("Driver", "ドライバー"),
    # --- sharing --------------------------------------------------------------------------------
    "share.title": ("Sharing", "共有"),
    "share.intro": ("Users you share the node with see it and can place instances on it; they cannot "
                    "change or delete it.",
                    "共有したユーザーはこのノードを閲覧し、インスタンスを配置できます。"
                    "変更や削除はできません。"),
    "share.none": ("This node is not shared with anyone.", "このノードは誰とも共有されていません。"),
    "share.since": ("Shared since", "共有開始"),
    "share.revoke": ("Stop sharing", "共有を解除"),
    "share.revoke_named": ("Stop sharing with {name}", "{name} との共有を解除"),
    "share.add": ("Share with a user", "ユーザーと共有"),
    "share.username_hint": ("Their DM username, e.g. alice.", "相手の DM ユーザー名 (例: alice)。"),
    "share.submit": ("Share", "共有"),
    # --- instances ------------------------------------------------------------------------------
    "instances.title": ("Instances", "インスタンス"),
    "instances.intro": ("Your containers on the nodes: their status, resources and logs.",
                        "ノード上で動くあなたのコンテナー。状態・リソース・ログを確認できます。"),
    "instances.intro_admin": ("Every instance in DM, with its owner: status, resources and logs.",
                              "DM のすべてのインスタンスを所有者とともに表示します。"
                              "状態・リソース・ログを確認できます。"),
    "instances.new": ("New instance", "インスタンスを作成"),
    "instances.empty.heading": ("No instances yet", "インスタンスはまだありません"),
    "instances.empty.text": ("An instance is a container on one of your nodes, with the CPUs, memory and GPUs "
                             "you give it. Create one from an image in the catalogue.",
                             "インスタンスは、指定した CPU・メモリー・GPU を割り当てて、"
                             "ノード上で動かすコンテナーです。"
                             "カタログにあるイメージから作成します。"),
    "inst.name": ("Name", "名前"),
    "inst.name_hint": ("1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit. "
                       "It becomes the container's host name.",
                       "英数字・「.」「_」「-」の 1〜64 文字で、先頭は英数字にしてください。"
                       "コンテナーのホスト名にもなります。"),
    "inst.owner": ("Owner", "所有者"),
    "inst.node": ("Node", "ノード"),
    "inst.image": ("Image", "イメージ"),
    "inst.status": ("Status", "状態"),
    "inst.status.pending": ("Pending", "待機中"),
    "inst.status.creating": ("Creating", "作成中"),
    "inst.status.running": ("Running", "実行中"),
    "inst.status.stopped": ("Stopped", "停止"),
    "inst.status.error": ("Error", "エラー"),
    "inst.status.deleting": ("Deleting", "削除中"),
    "inst.status.deleted": ("Deleted", "削除済み"),
    "inst.desired.running": ("starting", "起動しています"),
    "inst.desired.stopped": ("stopping", "停止しています"),
    "inst.resources": ("Resources", "リソース"),
    "inst.created": ("Created", "作成"),
    "inst.created_ago": ("created {when}", "{when}に作成"),
    "inst.created_at": ("Created {when}", "作成: {when}"),
    "inst.updated_at": ("status changed {when}", "状態の更新: {when}"),
    "inst.n_cpus": ("{n} CPUs", "{n} CPU"),
    "inst.n_gpus": ("{n} GPUs", "GPU {n} 基"),
    "inst.cpus_any": ("no CPU limit", "CPU 制限なし"),
    "inst.memory_any": ("no memory limit", "メモリー制限なし"),
    "inst.refresh": ("Refresh to see the current status", "再読み込みして最新の状態を表示"),
    "inst.new_title": ("New instance", "インスタンスの作成"),
    "inst.new_intro": ("Choose an image and what the instance may use. DM places it on a node with room for "
                       "it, or on the node you choose, and starts it.",
                       "イメージと使うリソースを選んでください。DM が空きのあるノード (または指定したノード) "
                       "に配置して起動します。"),
    "inst.no_images": ("There is no image you can use yet: pull or import one first.",
                       "使えるイメージがまだありません。先にイメージを取得またはインポートしてください。"),
    "inst.to_images": ("Go to Images", "イメージへ"),
    "inst.no_nodes": ("There is no node you may use. Add one, or ask an administrator to share one with you.",
                      "使えるノードがありません。ノードを追加するか、管理者に共有を依頼してください。"),
    "inst.to_nodes": ("Go to Nodes", "ノードへ"),
    "inst.no_usable_nodes": ("None of your nodes can take an instance now: they are offline or cordoned.",
                             "現在インスタンスを配置できるノードがありません (オフラインまたは受付停止中)。"),
    "inst.what": ("What to run", "実行する内容"),
    "inst.where": ("Where, and how much", "配置先とリソース"),
    "inst.image_choose": ("Choose an image…", "イメージを選択…"),
    "inst.image_group": ("on {node}", "{node} 上"),
    "inst.image_hint": ("Images you may use, by the node that holds them. The instance runs on a node that "
                        "has the image.",
                        "使えるイメージを、保持しているノードごとに表示しています。"
                        "インスタンスはそのイメージがあるノードで動きます。"),
    "inst.command": ("Command", "コマンド"),
    "inst.command_hint": ("One argument per line, passed as they are: no shell, no quoting. Empty: the image's "
                          "own command.",
                          "1 行に 1 つの引数を書きます。シェルは使わず、引用符も解釈しません。"
                          "空欄ならイメージ既定のコマンドで起動します。"),
    "inst.command_default": ("the image's own command", "イメージ既定のコマンド"),
    "inst.env": ("Environment", "環境変数"),
    "inst.env_hint": ("One KEY=VALUE per line.", "1 行に 1 つ、KEY=VALUE の形式で書きます。"),
    "inst.none": ("none", "なし"),
    "inst.node_auto": ("Any node with room (DM chooses)", "空きのあるノード (DM が選択)"),
    "inst.node_hint": ("Offline and cordoned nodes cannot take new instances.",
                       "オフラインまたは受付停止中のノードには新しいインスタンスを配置できません。"),
    "inst.unavailable": ("unavailable", "利用不可"),
    "inst.cpus": ("CPUs", "CPU"),
    "inst.memory": ("Memory", "メモリー"),
    "inst.memory_mb": ("Memory (MiB)", "メモリー (MiB)"),
    "inst.gpus": ("GPUs", "GPU 数"),
    "inst.no_limit": ("no limit", "制限なし"),
    "inst.limits_hint": ("Empty CPU or memory: no limit (and nothing reserved on the node). GPUs: a number, or "
                         "tick the very GPUs you want below.",
                         "CPU やメモリーを空欄にすると制限なし (ノード上の予約もなし) になります。"
                         "GPU は数を指定するか、下の一覧で使う GPU を直接選んでください。"),
    "inst.capacity": ("Free on your nodes", "各ノードの空き"),
    "inst.free_cpus": ("CPUs free", "空き CPU"),
    "inst.free_memory": ("Memory free", "空きメモリー"),
    "inst.free_gpus": ("GPUs free", "空き GPU"),
    "inst.gpus_free_of": ("{free} of {total} free", "{total} 基中 {free} 基が空き"),
    "inst.gpus_hint": ("Ticked GPUs are used instead of the number above; they must all be on one node.",
                       "GPU にチェックを入れると、上の GPU 数の代わりにそれらが使われます。"
                       "選ぶ GPU はすべて同じノードのものにしてください。"),
    "inst.advanced": ("Administrator options", "管理者向けオプション"),
    "inst.advanced_warning": ("These give the container power over the whole node. Use them only for "
                              "instances you trust completely.",
                              "これらを有効にすると、コンテナーがノード全体を操作できるようになります。"
                              "完全に信頼できるインスタンスにだけ使ってください。"),
    "inst.privileged": ("Privileged", "特権モード"),
    "inst.privileged_hint": ("All devices and kernel capabilities of the node.",
                             "ノードのすべてのデバイスとカーネル権限を与えます。"),
    "inst.host_network": ("Host network", "ホストネットワーク"),
    "inst.host_network_hint": ("The node's own network stack: every port of the node, no isolation.",
                               "ノード自身のネットワークを使います。ノードのすべてのポートを使え、分離されません。"),
    "inst.create_submit": ("Create instance", "インスタンスを作成"),
    "inst.start": ("Start", "起動"),
    "inst.stop": ("Stop", "停止"),
    "inst.restart": ("Restart", "再起動"),
    "inst.delete": ("Delete…", "削除…"),
    "inst.being_deleted": ("This instance is being deleted: its container is removed and its GPUs are freed "
                           "(when the node is offline: once it returns).",
                           "このインスタンスは削除中です。コンテナーを削除し GPU を解放します "
                           "(ノードがオフラインの場合は復帰後に行います)。"),
    "inst.details": ("Details", "詳細"),
    "inst.container": ("Container", "コンテナー"),
    "inst.no_container": ("not created yet", "まだ作成されていません"),
    "inst.gpus_held": ("GPUs", "GPU"),
    "inst.gpus_held_hint": ("Held by this instance until it is deleted, also while it is stopped.",
                            "停止中も含め、削除されるまでこのインスタンスが確保します。"),
    "inst.no_gpus_held": ("This instance holds no GPUs.", "このインスタンスは GPU を使っていません。"),
    "inst.delete_confirm_title": ("Delete {name}?", "{name} を削除しますか?"),
    "inst.delete_confirm": ("You are about to delete the instance {name} on {node}.",
                            "{node} 上のインスタンス {name} を削除します。"),
    "inst.delete_effect_container": ("Its container is stopped and removed, with everything written inside "
                                      "it. This cannot be undone.",
                                      "コンテナーを停止して削除します。コンテナー内に書き込まれた内容も失われます。"
                                      "元に戻せません。"),
    "inst.delete_effect_gpus": ("Its {n} GPU(s) are freed for other instances.",
                                "確保している GPU {n} 基を解放し、他のインスタンスが使えるようにします。"),
    "inst.delete_effect_image": ("The image {image} stays; to keep this container's changes, save it as an image "
                                 "first.",
                                 "イメージ {image} は残ります。このコンテナーの変更を残すには、"
                                 "先にイメージとして保存してください。"),
    "inst.delete_effect_offline": ("The node is offline: the container is removed once it is back.",
                                   "ノードはオフラインです。復帰した時点でコンテナーを削除します。"),
    "inst.delete_submit": ("Delete for good", "完全に削除"),
    # --- logs and commit ----------------------------------------------------------------------------
    "logs.title": ("Logs", "ログ"),
    "logs.intro": ("The last {n} lines the container wrote.", "コンテナーが出力した直近 {n} 行です。"),
    "logs.follow": ("Follow", "追跡"),
    "logs.following": ("Following… (stop)", "追跡中… (停止)"),
    "logs.reload": ("Reload", "再読み込み"),
    "logs.empty": ("The container has written nothing yet.", "コンテナーはまだ何も出力していません。"),
    "logs.not_yet": ("No logs yet: the container is being created.",
                     "コンテナーを作成中のため、ログはまだありません。"),
    "logs.offline": ("The logs cannot be read: the node is offline.",
                     "ノードがオフラインのため、ログを読み込めません。"),
    "logs.unavailable": ("The logs cannot be read right now.", "現在ログを読み込めません。"),
    "commit.title": ("Save as an image", "イメージとして保存"),
    "commit.intro": ("Saves the container's current file system as a new image on {node}; it is yours and "
                     "private until you make it public.",
                     "コンテナーの現在のファイルシステムを、{node} 上の新しいイメージとして保存します。"
                     "保存したイメージはあなたのもので、公開するまでは非公開です。"),
    "commit.submit": ("Save image", "イメージを保存"),
    # --- images -----------------------------------------------------------------------------------
    "images.title": ("Images", "イメージ"),
    "images.intro": ("The images on the nodes you may use: yours and the public ones. Pull one from a "
                     "registry, import a tarball or copy one to another node.",
                     "使えるノード上のイメージ (あなたのものと公開されたもの) です。"
                     "レジストリーからの取得、tar アーカイブのインポート、他のノードへのコピーができます。"),
    "images.intro_admin": ("Every image on every node. Pull one from a registry, import a tarball or copy one "
                           "to another node.",
                           "すべてのノード上のすべてのイメージです。レジストリーからの取得、tar アーカイブの"
                           "インポート、他のノードへのコピーができます。"),
    "images.jump": ("Nodes", "ノード"),
    "images.count": ("{n} image(s)", "{n} 個のイメージ"),
    "images.no_nodes.heading": ("No nodes to hold images", "イメージを置けるノードがありません"),
    "images.no_nodes.text": ("Images live on nodes. Add a node, or ask an administrator to share one with you.",
                             "イメージはノード上に置かれます。ノードを追加するか、管理者に共有を依頼してください。"),
    "images.none_on_node": ("No images here that you may use. Pull or import one below.",
                            "このノードには使えるイメージがありません。下のフォームから取得またはインポートしてください。"),
    "images.node_offline": ("The node is not online: pulls, imports and copies wait until it is.",
                            "ノードがオンラインではないため、取得・インポート・コピーはできません。"),
    "image.ref": ("Image", "イメージ"),
    "image.size": ("Size", "サイズ"),
    "image.owner": ("Owner", "所有者"),
    "image.state": ("Access", "公開範囲"),
    "image.you": ("you", "あなた"),
    "image.unclaimed": ("found on the node", "ノード上で検出"),
    "image.unclaimed_hint": ("This image was on the node before anyone brought it through DM; only "
                             "administrators see it until it is made public.",
                             "DM を通さずにノード上にあったイメージです。公開するまでは管理者だけが見られます。"),
    "image.public": ("Public", "公開"),
    "image.private": ("Private", "非公開"),
    "image.in_use": ("in use · {n}", "使用中 · {n}"),
    "image.run": ("Run", "実行"),
    "image.make_public": ("Make public", "公開する"),
    "image.make_private": ("Make private", "非公開にする"),
    "image.make_public_named": ("Make {ref} public", "{ref} を公開する"),
    "image.make_private_named": ("Make {ref} private", "{ref} を非公開にする"),
    "image.copy": ("Copy", "コピー"),
    "image.copy_to_named": ("Copy {ref} to node", "{ref} のコピー先ノード"),
    "image.delete": ("Delete…", "削除…"),
    "image.delete_named": ("Delete {ref}", "{ref} を削除"),
    "image.repository": ("Repository", "リポジトリー"),
    "image.repository_hint": ("Lower-case letters, digits, '.', '_', '/' or '-', e.g. lab/pytorch.",
                              "英小文字・数字・「.」「_」「/」「-」が使えます (例: lab/pytorch)。"),
    "image.tag": ("Tag", "タグ"),
    "image.tag_hint": ("Empty: latest.", "空欄なら latest になります。"),
    "image.delete_confirm_title": ("Delete {ref}?", "{ref} を削除しますか?"),
    "image.delete_confirm": ("You are about to delete the image {ref} from {node}.",
                             "{node} からイメージ {ref} を削除します。"),
    "image.delete_effect_node": ("It is removed from the node's container runtime.",
                                 "ノードのコンテナーランタイムから削除します。"),
    "image.delete_effect_catalogue": ("It leaves DM's catalogue; copies on other nodes stay.",
                                      "DM のカタログからも消えます。他のノードにあるコピーは残ります。"),
    "image.in_use_by": ("{n} instance(s) use this image:", "{n} 個のインスタンスがこのイメージを使っています:"),
    "image.force_explain": ("Delete them first, or delete the image anyway: they keep running, but cannot be "
                            "created again from it.",
                            "先にそれらを削除するか、このまま強制削除してください。強制削除しても動作中のものは"
                            "動き続けますが、このイメージから作り直すことはできなくなります。"),
    "image.force": ("Delete it even though instances use it", "インスタンスが使っていても削除する"),
    "image.delete_submit": ("Delete image", "イメージを削除"),
    "pull.title": ("Pull from a registry", "レジストリーから取得"),
    "pull.ref": ("Image reference", "イメージ参照"),
    "pull.ref_hint": ("e.g. debian:12 or registry.example.org/team/app:1.2; without a tag: latest.",
                      "例: debian:12、registry.example.org/team/app:1.2。タグを省略すると latest になります。"),
    "pull.login": ("Registry login", "レジストリーへのログイン"),
    "pull.username": ("Registry username", "レジストリーのユーザー名"),
    "pull.password": ("Registry password or token", "レジストリーのパスワードまたはトークン"),
    "pull.credentials_note": ("Used for this one pull only and never stored by DM.",
                              "この取得 1 回だけに使い、DM には保存しません。"),
    "pull.submit": ("Pull image", "イメージを取得"),
    "import.title": ("Import a tarball", "tar アーカイブをインポート"),
    "import.file": ("Tarball", "tar アーカイブ"),
    "import.file_hint": ("docker save output or a root file system tar (.tar, .tar.gz). It is streamed to the "
                         "node, not held in memory.",
                         "docker save の出力、またはルートファイルシステムの tar (.tar、.tar.gz)。"
                         "メモリーに溜めずにノードへ転送します。"),
    "import.submit": ("Import", "インポート"),
    # --- relative times -------------------------------------------------------------------------
    "ago.now": ("just now", "たった今"),
    "ago.s": ("{n} s ago", "{n} 秒前"),
    "ago.m": ("{n} min ago", "{n} 分前"),
    "ago.h": ("{n} h ago", "{n} 時間前"),
    "ago.d": ("{n} d ago", "{n} 日前"),
    "until.expired": ("expired", "期限切れ"),
    "until.m": ("in {n} min", "あと {n} 分"),
    "until.h": ("in {n} h", "あと {n} 時間"),
    "until.d": ("in {n} days", "あと {n} 日"),
    "dur.m": ("{n} minutes", "{n} 分間"),
    "dur.h": ("{n} hours", "{n} 時間"),
    "dur.h1": ("1 hour", "1 時間"),
    "dur.d": ("{n} days", "{n} 日間"),
    "dur.d1": ("1 day", "1 日間"),
    # --- features still to come -------------------------------------------------------------
    "empty.not_yet": ("This part of DM is not available yet. It arrives in a coming version.",
                      "この機能はまだ利用できません。今後のバージョンで提供されます。"),
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
    "flash.node_renamed": ("The node is now called {name}.", "ノード名を {name} に変更しました。"),
    "flash.node_cordoned": ("{name} is cordoned: no new instances are placed on it.",
                            "{name} の受付を停止しました。新しいインスタンスは配置されません。"),
    "flash.node_uncordoned": ("{name} takes new instances again.", "{name} の受付を再開しました。"),
    "flash.credential_delivered": ("{name} received its new credential and is reconnecting with it.",
                                   "{name} に新しい認証情報を渡しました。新しい認証情報で再接続しています。"),
    "flash.node_deleted": ("The node {name} has been deleted.", "ノード {name} を削除しました。"),
    "flash.node_shared": ("The node is now shared with {name}.", "ノードを {name} と共有しました。"),
    "flash.node_unshared": ("The node is no longer shared with {name}.", "{name} との共有を解除しました。"),
    "flash.instance_created": ("The instance {name} has been created; it starts in a moment.",
                               "インスタンス {name} を作成しました。まもなく起動します。"),
    "flash.instance_start": ("{name} is starting.", "{name} を起動しています。"),
    "flash.instance_stop": ("{name} is stopping.", "{name} を停止しています。"),
    "flash.instance_restart": ("{name} has been restarted.", "{name} を再起動しました。"),
    "flash.instance_deleted": ("The instance {name} is being deleted; its GPUs are freed.",
                               "インスタンス {name} を削除しています。GPU は解放されます。"),
    "flash.instance_committed": ("Saved as the image {ref}.", "イメージ {ref} として保存しました。"),
    "flash.image_pulled": ("{ref} has been pulled onto {node}.", "{ref} を {node} に取得しました。"),
    "flash.image_imported": ("{ref} has been imported onto {node}.", "{ref} を {node} にインポートしました。"),
    "flash.image_copied": ("{ref} has been copied.", "{ref} をコピーしました。"),
    "flash.image_public": ("{ref} is now public: every user may use it.",
                           "{ref} を公開しました。すべてのユーザーが使えます。"),
    "flash.image_private": ("{ref} is now private.", "{ref} を非公開にしました。"),
    "flash.image_deleted": ("The image {ref} has been deleted.", "イメージ {ref} を削除しました。"),
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
    "err.node_name": ("Node names use 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                      "letter or digit.",
                      "ノード名は英数字・「.」「_」「-」の 1〜64 文字で、先頭は英数字にしてください。"),
    "err.node_name_taken": ("A node with this name already exists.", "この名前のノードはすでに存在します。"),
    "err.node_quota": ("You have reached your node quota. Delete a node or ask an administrator.",
                       "ノードのクォータに達しています。ノードを削除するか、管理者に相談してください。"),
    "err.no_such_user": ("There is no user called {name}.", "ユーザー {name} は存在しません。"),
    "err.share_is_owner": ("{name} owns this node already.", "{name} はすでにこのノードの所有者です。"),
    "err.already_shared": ("The node is already shared with {name}.", "このノードはすでに {name} と共有されています。"),
    "err.node_offline": ("{name} is not online, so its agent cannot be reached. Try again when it is.",
                         "{name} はオンラインではないため、エージェントに接続できません。"
                         "オンラインになってからもう一度お試しください。"),
    "err.agent_timeout": ("The agent on {name} did not answer in time. Try again.",
                          "{name} のエージェントが時間内に応答しませんでした。もう一度お試しください。"),
    "err.agent_error": ("The agent on {name} could not do it; its log says why.",
                        "{name} のエージェントで処理できませんでした。理由はエージェントのログにあります。"),
    "err.inst.name": ("Instance names use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or "
                      "digit.",
                      "インスタンス名は英数字・「.」「_」「-」の 1〜64 文字で、先頭は英数字にしてください。"),
    "err.inst.name_taken": ("You already have an instance with this name.",
                            "この名前のインスタンスはすでにあります。"),
    "err.inst.image": ("Choose an image.", "イメージを選んでください。"),
    "err.inst.node": ("Choose a node you may use, or let DM choose.",
                      "使えるノードを選ぶか、DM に任せてください。"),
    "err.inst.cpus": ("CPUs must be a number above 0 (e.g. 0.5 or 2), or empty.",
                      "CPU は 0 より大きい数 (例: 0.5、2) か空欄にしてください。"),
    "err.inst.memory": ("Memory must be a whole number of MiB from 6, or empty.",
                        "メモリーは 6 以上の整数 (MiB) か空欄にしてください。"),
    "err.inst.gpus": ("GPUs must be a whole number from 0 to 64.", "GPU 数は 0〜64 の整数にしてください。"),
    "err.inst.env": ("Environment: one KEY=VALUE per line; keys use letters, digits and '_' and do not start "
                     "with a digit.",
                     "環境変数は 1 行に 1 つ KEY=VALUE の形式で書いてください。"
                     "キーは英字・数字・「_」で、数字から始めないでください。"),
    "err.inst.env_line": ("Environment, non-empty line {n}: write it as KEY=VALUE.",
                          "環境変数の {n} 行目 (空行を除く) を KEY=VALUE の形式にしてください。"),
    "err.inst.command": ("The command has too many or too long arguments.",
                         "コマンドの引数が多すぎるか、長すぎます。"),
    "err.inst.detail": ("Check your input: {message}", "入力を確認してください: {message}"),
    "err.inst.no_capacity": ("No node can take this instance now. {message}",
                             "このインスタンスを配置できるノードが今はありません。{message}"),
    "err.inst.quota": ("Your quota does not allow this: {message}", "クォータを超えるため作成できません: {message}"),
    "err.inst.admin_only": ("Only administrators may create privileged or host-network instances.",
                            "特権モードやホストネットワークのインスタンスを作れるのは管理者だけです。"),
    "err.inst.deleting": ("This instance is being deleted.", "このインスタンスは削除中です。"),
    "err.inst.node_offline": ("The node is not online, so this cannot be done now. Try again when it is.",
                              "ノードがオンラインではないため、今は実行できません。オンラインになってから"
                              "もう一度お試しください。"),
    "err.inst.agent_timeout": ("The node's agent did not answer in time. Try again.",
                               "ノードのエージェントが時間内に応答しませんでした。もう一度お試しください。"),
    "err.inst.agent_error": ("The node could not do it: {message}", "ノードで処理できませんでした: {message}"),
    "err.inst.invalid_image": ("The node refused the image name: {message}",
                               "ノードがイメージ名を受け付けませんでした: {message}"),
    "err.image.ref": ("Enter an image reference such as debian:12.",
                      "debian:12 のようなイメージ参照を入力してください。"),
    "err.image.repository": ("Repositories use lower-case letters, digits, '.', '_', '/' or '-', e.g. lab/app.",
                             "リポジトリーは英小文字・数字・「.」「_」「/」「-」で指定してください (例: lab/app)。"),
    "err.image.tag": ("Tags use letters, digits, '_', '.' or '-', up to 128 characters.",
                      "タグは英数字・「_」「.」「-」の 128 文字以内にしてください。"),
    "err.image.node_id": ("Choose a node to copy to.", "コピー先のノードを選んでください。"),
    "err.image.username": ("The registry username is too long.", "レジストリーのユーザー名が長すぎます。"),
    "err.image.password": ("The registry password is too long.", "レジストリーのパスワードが長すぎます。"),
    "err.image.node_offline": ("The node is not online. Try again when it is.",
                               "ノードがオンラインではありません。オンラインになってからもう一度お試しください。"),
    "err.image.agent_timeout": ("The node's agent did not answer in time. Try again.",
                                "ノードのエージェントが時間内に応答しませんでした。もう一度お試しください。"),
    "err.image.agent_error": ("The node could not do it: {message}", "ノードで処理できませんでした: {message}"),
    "err.image.invalid_image": ("The node refused it: {message}", "ノードが受け付けませんでした: {message}"),
    "err.image.same_node": ("The image is already on that node.", "そのイメージはすでにそのノードにあります。"),
    "err.image.too_large": ("The tarball is too large.", "tar アーカイブが大きすぎます。"),
    "err.image.empty_body": ("Choose a tarball to upload; an empty file cannot be imported.",
                             "アップロードする tar アーカイブを選んでください。空のファイルはインポートできません。"),
    "err.image.transfer_failed": ("The source node did not deliver the image. Try again.",
                                  "コピー元のノードからイメージが届きませんでした。もう一度お試しください。"),
    "err.image.in_use": ("Instances use this image: delete them first, or tick the box to delete it anyway.",
                         "このイメージを使っているインスタンスがあります。先にそれらを削除するか、"
                         "チェックを入れて強制的に削除してください。"),
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
    # --- SSH keys -----------------------------------------------------------------------------
    "sshkeys.title": ("SSH keys", "SSH 鍵"),
    "sshkeys.intro": ("Your SSH public keys. DM puts the ones you choose into your instances' authorized_keys.",
                      "あなたの SSH 公開鍵です。選んだ鍵を DM がインスタンスの authorized_keys に書き込みます。"),
    "sshkeys.add": ("Add a key", "鍵を追加"),
    "sshkeys.add_intro": ("Paste your public key, or choose its .pub file. Only the public half: never a private key.",
                          "公開鍵を貼り付けるか、.pub ファイルを選んでください。公開鍵だけを使います。"
                          "秘密鍵は決して送らないでください。"),
    "sshkeys.public_key": ("Public key", "公開鍵"),
    "sshkeys.public_key_hint": ("One line such as the contents of ~/.ssh/id_ed25519.pub (an RFC 4716 block works "
                                "too). Options before the key, such as command=\"…\" or no-pty, are removed: DM "
                                "writes its own authorized_keys.",
                                "~/.ssh/id_ed25519.pub の中身のような 1 行です (RFC 4716 形式も使えます)。"
                                "鍵の前にある command=\"…\" や no-pty などのオプションは取り除きます。"
                                "authorized_keys は DM が自分で書き込みます。"),
    "sshkeys.key_file": ("…or choose the .pub file", "…または .pub ファイルを選択"),
    "sshkeys.key_file_hint": ("A public key file of up to {max} KiB.", "{max} KiB までの公開鍵ファイル。"),
    "sshkeys.name": ("Name", "名前"),
    "sshkeys.name_hint": ("Up to 100 characters. When empty, the key's comment is used.",
                          "100 文字まで。空欄のときは鍵のコメントを使います。"),
    "sshkeys.types": ("Accepted: ed25519, ECDSA, RSA of 2048 bits or more, and FIDO security keys "
                      "(sk-ssh-ed25519, sk-ecdsa). DSA keys and certificates are not accepted.",
                      "使える鍵: ed25519、ECDSA、2048 ビット以上の RSA、FIDO セキュリティーキー "
                      "(sk-ssh-ed25519、sk-ecdsa)。DSA 鍵と証明書は使えません。"),
    "sshkeys.add_submit": ("Add key", "鍵を追加"),
    "sshkeys.type": ("Type", "種類"),
    "sshkeys.bits": ("{n} bits", "{n} ビット"),
    "sshkeys.fingerprint": ("Fingerprint", "フィンガープリント"),
    "sshkeys.comment": ("Comment", "コメント"),
    "sshkeys.added": ("Added", "追加日時"),
    "sshkeys.count": ("{n} of at most {max} keys.", "鍵 {n} 個 (上限 {max} 個)。"),
    "sshkeys.rename": ("Rename", "名前を変更"),
    "sshkeys.rename_named": ("New name for {name}", "{name} の新しい名前"),
    "sshkeys.rename_submit": ("Save", "保存"),
    "sshkeys.delete": ("Delete", "削除"),
    "sshkeys.delete_named": ("Delete {name}", "{name} を削除"),
    "sshkeys.delete_title": ("Delete the SSH key {name}?", "SSH 鍵 {name} を削除しますか?"),
    "sshkeys.delete_confirm": ("The key is removed from your account. Check the fingerprint: this cannot be undone.",
                               "この鍵をアカウントから削除します。フィンガープリントを確認してください。"
                               "元に戻すことはできません。"),
    "sshkeys.delete_submit": ("Delete key", "鍵を削除"),
    "sshkeys.empty.heading": ("No SSH keys yet", "SSH 鍵はまだありません"),
    "sshkeys.empty.text": ("Add your public key below to log in to your instances over SSH. No key yet? Make one "
                           "on your computer with:",
                           "SSH でインスタンスにログインするには、下のフォームで公開鍵を追加してください。"
                           "鍵がない場合は、お使いのコンピューターで次のコマンドを実行して作成できます:"),
    "flash.ssh_key_added": ("The key {name} has been added ({fingerprint}).",
                            "鍵 {name} を追加しました ({fingerprint})。"),
    "flash.ssh_key_options": ("The options before the key were removed ({options}): DM writes its own "
                              "authorized_keys.",
                              "鍵の前にあったオプション ({options}) は取り除きました。"
                              "authorized_keys は DM が自分で書き込みます。"),
    "flash.ssh_key_renamed": ("The key is now called {name}.", "鍵の名前を {name} に変更しました。"),
    "flash.ssh_key_deleted": ("The key {name} has been deleted.", "鍵 {name} を削除しました。"),
    "err.sshkey.name": ("Give the key a name of 1 to 100 characters, on one line.",
                        "鍵には 1〜100 文字の名前を 1 行で付けてください。"),
    "err.sshkey.both": ("Paste a key or choose a file, not both.",
                        "鍵を貼り付けるか、ファイルを選ぶか、どちらか一方にしてください。"),
    "err.sshkey.empty": ("Paste a public key or choose its .pub file.",
                         "公開鍵を貼り付けるか、.pub ファイルを選んでください。"),
    "err.sshkey.private_key": ("This is a private key: never share it. Add the public key instead, the .pub file "
                               "(for example ~/.ssh/id_ed25519.pub).",
                               "これは秘密鍵です。秘密鍵は決して人に渡さないでください。代わりに公開鍵 "
                               "(.pub ファイル、例: ~/.ssh/id_ed25519.pub) を追加してください。"),
    "err.sshkey.too_large": ("This is too long for a public key (more than {max} bytes).",
                             "公開鍵としては長すぎます ({max} バイトを超えています)。"),
    "err.sshkey.not_a_key": ("This is not an SSH public key. A key looks like: ssh-ed25519 AAAAC3Nz… you@host",
                             "SSH 公開鍵ではありません。鍵は次のような形です: ssh-ed25519 AAAAC3Nz… you@host"),
    "err.sshkey.unsupported_format": ("PEM keys are not accepted. Convert it first: ssh-keygen -i -m PKCS8 -f "
                                      "key.pem",
                                      "PEM 形式の鍵は使えません。先に変換してください: "
                                      "ssh-keygen -i -m PKCS8 -f key.pem"),
    "err.sshkey.line_break": ("A key is one line; this one has line breaks inside it.",
                              "鍵は 1 行です。この鍵には途中に改行が含まれています。"),
    "err.sshkey.multiple_keys": ("This holds more than one key. Add them one at a time.",
                                 "複数の鍵が含まれています。1 つずつ追加してください。"),
    "err.sshkey.control_characters": ("The key contains control characters (such as NUL) that are not allowed.",
                                      "鍵に使えない制御文字 (NUL など) が含まれています。"),
    "err.sshkey.bad_options": ("The options before the key have an unterminated quote.",
                               "鍵の前のオプションに閉じられていない引用符があります。"),
    "err.sshkey.damaged": ("The key data is incomplete or damaged. Was it cut off when copied?",
                           "鍵のデータが不完全か壊れています。コピーの際に途中で切れていませんか?"),
    "err.sshkey.trailing_garbage": ("There is text after the end of the key.",
                                    "鍵の終わりの後に余分な文字があります。"),
    "err.sshkey.unsupported_type": ("Keys of type {type} are not accepted. Use ed25519, ECDSA or RSA of 2048 bits "
                                    "or more.",
                                    "種類 {type} の鍵は使えません。ed25519、ECDSA、2048 ビット以上の RSA を"
                                    "使ってください。"),
    "err.sshkey.weak_key": ("RSA keys need at least {min} bits; this one has {bits}. Make a new key, for example "
                            "with ssh-keygen -t ed25519.",
                            "RSA 鍵は {min} ビット以上が必要です。この鍵は {bits} ビットです。"
                            "ssh-keygen -t ed25519 などで新しい鍵を作ってください。"),
    "err.sshkey.exists": ("You have added this key already ({fingerprint}).",
                          "この鍵はすでに追加されています ({fingerprint})。"),
    "err.sshkey.too_many": ("You have the most SSH keys allowed. Delete one first.",
                            "SSH 鍵の数が上限に達しています。先にどれかを削除してください。"),
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
